"""The registry's settings: ``DEFINITION_REGISTRY_*`` variables (see docs/conventions.md), read once."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from wf_platform.settings import ServiceSettings

__all__ = ["ENV_PREFIX", "Settings"]

ENV_PREFIX = "DEFINITION_REGISTRY"


@dataclass(frozen=True, kw_only=True)
class Settings(ServiceSettings):
    """Platform settings plus the registry's own."""

    service_name: str = "definition-registry"
    port: int = 8001
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5433/wf_registry"
    max_definition_bytes: int = 262_144
    """A definition document larger than this is refused (413 ``document_too_large``)."""

    @classmethod
    def from_environ(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read ``DEFINITION_REGISTRY_*`` and ``OTEL_*``."""
        return cls.from_env(
            ENV_PREFIX, env=os.environ if env is None else env, service_name="definition-registry"
        )
