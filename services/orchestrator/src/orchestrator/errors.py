"""Errors of the orchestrator, each a problem-details error of the platform (mapped once, at the edge)::

OrchestratorError
├── InstanceNotFoundError        404: no such instance in the caller's tenant
├── DefinitionNotFoundError      404 (unprocessable start: 422): the registry has no such definition
├── DefinitionDeprecatedError    422: that version takes no new instances
├── IdempotencyConflictError     409: the same Idempotency-Key with another body
├── InstanceEndedError           409: the instance already ended
├── NoIncidentError              409: retry without an open incident
├── InputTooLargeError           413: the start input is over the limit
└── RegistryUnavailableError     503: the registry did not answer
"""

from __future__ import annotations

from wf_platform.problems import (
    ConflictError,
    NotFoundError,
    PayloadTooLargeError,
    ServiceUnavailableError,
    UnprocessableError,
)

__all__ = [
    "ContextTooLargeError",
    "DefinitionDeprecatedError",
    "DefinitionNotFoundError",
    "IdempotencyConflictError",
    "InputTooLargeError",
    "InstanceEndedError",
    "InstanceNotFoundError",
    "NoIncidentError",
    "OrchestratorError",
    "RegistryUnavailableError",
]


class OrchestratorError(Exception):
    """Root of the orchestrator's errors."""


class InstanceNotFoundError(NotFoundError, OrchestratorError):
    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        super().__init__(f"no instance {instance_id}", code="instance_not_found")


class DefinitionNotFoundError(UnprocessableError, OrchestratorError):
    def __init__(self, name: str, version: str | None) -> None:
        self.name = name
        self.version = version
        what = f"{name} {version}" if version else name
        super().__init__(f"no definition {what} in the registry", code="definition_not_found")


class DefinitionDeprecatedError(UnprocessableError, OrchestratorError):
    def __init__(self, name: str, version: str) -> None:
        self.name = name
        self.version = version
        super().__init__(
            f"{name} {version} is deprecated: it takes no new instances", code="definition_deprecated"
        )


class IdempotencyConflictError(ConflictError, OrchestratorError):
    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(
            "this Idempotency-Key was used with another request body", code="idempotency_key_reused"
        )


class InstanceEndedError(ConflictError, OrchestratorError):
    def __init__(self, instance_id: str, status: str) -> None:
        self.instance_id = instance_id
        self.instance_status = status
        super().__init__(f"instance {instance_id} is {status}", code="instance_ended")


class NoIncidentError(ConflictError, OrchestratorError):
    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        super().__init__(f"instance {instance_id} has no open incident to retry", code="no_incident")


class InputTooLargeError(PayloadTooLargeError, OrchestratorError):
    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"input is {size} bytes; the limit is {limit}", code="input_too_large")


class ContextTooLargeError(PayloadTooLargeError, OrchestratorError):
    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            f"the instance context would be {size} bytes; the limit is {limit}", code="context_too_large"
        )


class RegistryUnavailableError(ServiceUnavailableError, OrchestratorError):
    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"the definition registry is unavailable: {reason}")
