"""The AsyncAPI document in docs/ is exactly what the message Structs generate."""

from __future__ import annotations

import msgspec
import yaml

from workflow_core.asyncapi import DOCUMENT_PATH, MESSAGES, asyncapi_document, render
from workflow_core.messages import JobMessage


def test_the_committed_asyncapi_document_matches_the_structs() -> None:
    assert DOCUMENT_PATH.exists(), "run: uv run python -m workflow_core.asyncapi"
    assert DOCUMENT_PATH.read_text() == render(), (
        "docs/asyncapi.yaml is stale: run python -m workflow_core.asyncapi"
    )


def test_every_message_schema_lists_every_struct_field() -> None:
    document = asyncapi_document()
    schemas = document["components"]["schemas"]
    for struct in MESSAGES.values():
        schema = schemas[struct.__name__]
        assert set(schema["properties"]) == set(struct.__struct_fields__), struct.__name__
    assert document["channels"]["jobs"]["address"] == "wf.jobs.{tenant}.{step_type}"
    required = set(schemas["JobMessage"]["required"])
    assert {
        "job_id",
        "tenant",
        "instance_id",
        "step",
        "step_type",
        "attempt",
        "input",
        "deadline",
        "definition",
    } <= required


def test_a_job_body_validates_against_its_published_schema() -> None:
    import jsonschema

    document = yaml.safe_load(render())
    schema = {"$ref": "#/components/schemas/JobMessage", "components": document["components"]}
    job = JobMessage(
        job_id="j",
        tenant="acme",
        instance_id="i",
        step="a",
        step_type="payments.charge",
        attempt=1,
        input={},
        deadline=None,
        definition={"name": "n", "version": "1.0.0"},  # type: ignore[arg-type]
    )
    jsonschema.validate(msgspec.to_builtins(job), schema)
