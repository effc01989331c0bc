"""The AsyncAPI 3 document of the suite's NATS contract, generated from the message Structs.

``python -m workflow_core.asyncapi`` writes ``docs/asyncapi.yaml``; a test keeps the file equal to
what this module generates, so the document can never drift from the Structs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import msgspec
import yaml

from workflow_core.messages import (
    DefinitionPublished,
    InstanceEvent,
    JobMessage,
    JobResult,
    TaskCancelledMessage,
    TaskCompletedMessage,
    TaskCreatedMessage,
    TaskEscalatedMessage,
)

__all__ = ["MESSAGES", "asyncapi_document", "main"]

_TENANT = {"description": "The tenant id (^[a-z][a-z0-9_]{2,31}$).", "examples": ["acme"]}
_STEP_TYPE = {
    "description": "Dotted lower-case step type (payments.charge).",
    "examples": ["payments.charge"],
}

# channel key -> (address, parameters, message struct, description, Nats-Msg-Id rule, sender -> receiver)
_CHANNELS: dict[str, tuple[str, dict[str, Any], type[msgspec.Struct], str, str, str]] = {
    "jobs": (
        "wf.jobs.{tenant}.{step_type}",
        {"tenant": _TENANT, "step_type": _STEP_TYPE},
        JobMessage,
        "A machine step attempt for the workers of its step type (stream WF_JOBS, work queue).",
        "<job_id>:<attempt>",
        "orchestrator -> workers",
    ),
    "results": (
        "wf.results.{tenant}",
        {"tenant": _TENANT},
        JobResult,
        "A worker's report on one attempt (stream WF_RESULTS). Published with a JetStream publish "
        "before the job is acked. Optional header Wf-Worker names the worker.",
        "any stable id per (job_id, attempt), e.g. result:<job_id>:<attempt>",
        "workers -> orchestrator",
    ),
    "tasksCreated": (
        "wf.tasks.{tenant}.created",
        {"tenant": _TENANT},
        TaskCreatedMessage,
        "A human task to open (stream WF_TASKS).",
        "task:<task_id>:created",
        "orchestrator -> inbox",
    ),
    "tasksCancelled": (
        "wf.tasks.{tenant}.cancelled",
        {"tenant": _TENANT},
        TaskCancelledMessage,
        "A task withdrawn (instance cancelled).",
        "task:<task_id>:cancelled",
        "orchestrator -> inbox",
    ),
    "tasksEscalated": (
        "wf.tasks.{tenant}.escalated",
        {"tenant": _TENANT},
        TaskEscalatedMessage,
        "An overdue task: add candidate groups and/or set its priority (an extension of the design).",
        "task:<task_id>:escalated",
        "orchestrator -> inbox",
    ),
    "tasksCompleted": (
        "wf.tasks.{tenant}.completed",
        {"tenant": _TENANT},
        TaskCompletedMessage,
        "A task completed by a person; the instance resumes.",
        "task:<task_id>:completed",
        "inbox -> orchestrator",
    ),
    "instanceEvents": (
        "wf.events.{tenant}.instance.{event}",
        {"tenant": _TENANT, "event": {"enum": ["started", "completed", "failed", "cancelled"]}},
        InstanceEvent,
        "Instance lifecycle events (stream WF_EVENTS, 7 days).",
        "<instance_id>:<event>[:<seq>]",
        "orchestrator -> anyone",
    ),
    "definitionPublished": (
        "wf.events.{tenant}.definition.published",
        {"tenant": _TENANT},
        DefinitionPublished,
        "A definition version was registered.",
        "definition:<name>:<version>",
        "definition-registry -> anyone",
    ),
}

MESSAGES: dict[str, type[msgspec.Struct]] = {key: value[2] for key, value in _CHANNELS.items()}


def asyncapi_document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document as a dict."""
    _, components = msgspec.json.schema_components(
        list(MESSAGES.values()), ref_template="#/components/schemas/{name}"
    )
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for key, (address, parameters, struct, description, msg_id, flow) in _CHANNELS.items():
        name = struct.__name__
        messages[name] = {
            "name": name,
            "contentType": "application/json",
            "headers": {
                "type": "object",
                "properties": {
                    "traceparent": {
                        "type": "string",
                        "description": "W3C trace context of the instance's trace.",
                    },
                    "Nats-Msg-Id": {"type": "string", "description": f"Stable id: {msg_id}."},
                },
                "required": ["traceparent", "Nats-Msg-Id"],
            },
            "payload": {"$ref": f"#/components/schemas/{name}"},
        }
        channels[key] = {
            "address": address,
            "description": f"{description} ({flow})",
            "parameters": {
                p: {"description": v.get("description", p), **({"enum": v["enum"]} if "enum" in v else {})}
                for p, v in parameters.items()
            },
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
        }
        receiver = flow.split("->")[1].strip()
        operations[f"{key}"] = {
            "action": "receive" if receiver in {"orchestrator"} else "send",
            "channel": {"$ref": f"#/channels/{key}"},
            "summary": flow,
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Workflow suite NATS contract",
            "version": "1.0.0",
            "description": (
                "Every message is UTF-8 JSON on NATS JetStream. Delivery is at least once; consumers "
                "apply a message once (jobs and results per (job_id, attempt), tasks per task_id). "
                "Generated from workflow_core.messages by `python -m workflow_core.asyncapi`."
            ),
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": components},
    }


DOCUMENT_PATH = Path(__file__).resolve().parents[4] / "docs" / "asyncapi.yaml"


def render() -> str:
    """The document as YAML text (stable key order)."""
    return yaml.safe_dump(asyncapi_document(), sort_keys=True, allow_unicode=True, width=100)


def main() -> None:
    """Write ``docs/asyncapi.yaml``."""
    DOCUMENT_PATH.write_text(render())
    sys.stdout.write(f"wrote {DOCUMENT_PATH}\n")


if __name__ == "__main__":
    main()
