"""definition-registry: tenants register versioned workflow definitions over HTTP (port 8001)."""

from definition_registry.app import create_app
from definition_registry.settings import Settings

__all__ = ["Settings", "create_app"]
