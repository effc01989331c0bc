"""wf_client: the client SDK of the workflow suite (httpx; async and sync).

See :mod:`wf_client.client` for usage and :mod:`wf_client.errors` for the error tree.
"""

from wf_client.client import (
    DEFAULT_INBOX_URL,
    DEFAULT_ORCHESTRATOR_URL,
    DEFAULT_REGISTRY_URL,
    END_STATUSES,
    DefinitionSource,
    SyncWorkflowClient,
    WorkflowClient,
    definition_body,
)
from wf_client.errors import (
    BadRequest,
    Conflict,
    FieldError,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    Unavailable,
    ValidationFailed,
    WorkflowClientError,
    error_from_response,
)

__all__ = [
    "DEFAULT_INBOX_URL",
    "DEFAULT_ORCHESTRATOR_URL",
    "DEFAULT_REGISTRY_URL",
    "END_STATUSES",
    "BadRequest",
    "Conflict",
    "DefinitionSource",
    "FieldError",
    "Forbidden",
    "NotFound",
    "PayloadTooLarge",
    "SyncWorkflowClient",
    "Unauthorized",
    "Unavailable",
    "ValidationFailed",
    "WorkflowClient",
    "WorkflowClientError",
    "definition_body",
    "error_from_response",
]
