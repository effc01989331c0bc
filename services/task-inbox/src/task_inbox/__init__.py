"""task-inbox: people find, claim and complete human tasks over HTTP and in a web inbox (port 8003)."""

from task_inbox.app import create_app
from task_inbox.settings import Settings

__all__ = ["Settings", "create_app"]
