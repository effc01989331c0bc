"""Human-task forms: schema checks at registration, data validation at task completion."""

from __future__ import annotations

import copy
from typing import Any

import msgspec
import pytest
from jsonschema import Draft202012Validator
from referencing.exceptions import Unresolvable

from workflow_core.forms import (
    _NO_RETRIEVAL,  # the private registry and cache are the behaviour under test in two tests
    MAX_SCHEMA_BYTES,
    MAX_SCHEMA_DEPTH,
    FormError,
    FormSchemaError,
    _validator,
    check_form_schema,
    validate_form_data,
)

REVIEW: dict[str, Any] = {
    "type": "object",
    "properties": {
        "approved": {"type": "boolean"},
        "reason": {"type": "string", "minLength": 3, "maxLength": 200},
        "amount": {"type": "number", "minimum": 0, "maximum": 10_000},
        "quantity": {"type": "integer", "exclusiveMinimum": 0},
        "priority": {"enum": ["low", "normal", "high"]},
        "decided_on": {"type": "string", "format": "date"},
        "follow_up_at": {"type": "string", "format": "date-time"},
        "contact": {"type": "string", "format": "email"},
        "address": {
            "type": "object",
            "properties": {
                "street": {"type": "string"},
                "zip": {"type": "string", "pattern": "^[0-9]{4}[A-Z]{2}$"},
                "city": {"type": "string"},
            },
            "required": ["street", "city"],
            "additionalProperties": False,
        },
        "lines": {
            "type": "array",
            "maxItems": 20,
            "items": {
                "type": "object",
                "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}},
                "required": ["sku", "qty"],
            },
        },
    },
    "required": ["approved", "reason"],
}

VALID: dict[str, Any] = {
    "approved": True,
    "reason": "looks fine",
    "amount": 120.5,
    "quantity": 3,
    "priority": "high",
    "decided_on": "2025-03-01",
    "follow_up_at": "2025-03-08T09:30:00+01:00",
    "contact": "ada@example.com",
    "address": {"street": "Oudegracht 1", "zip": "3511AB", "city": "Utrecht"},
    "lines": [{"sku": "SKU-1", "qty": 2}, {"sku": "SKU-2", "qty": 1}],
}


def errors(data: dict[str, Any], schema: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    return [(e.path, e.message) for e in validate_form_data(REVIEW if schema is None else schema, data)]


def with_changes(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(VALID)
    data.update(changes)
    return data


# -- validate_form_data ----------------------------------------------------------------------------


def test_a_valid_form_passes() -> None:
    assert check_form_schema(REVIEW) == []
    assert validate_form_data(REVIEW, VALID) == []
    assert validate_form_data(REVIEW, {"approved": False, "reason": "nope"}) == []


def test_every_problem_is_listed_with_its_path() -> None:
    data = {"reason": "ok", "amount": -1, "priority": "urgent"}
    assert errors(data) == [
        ("/amount", "must be at least 0"),
        ("/approved", "is required"),
        ("/priority", 'must be one of: "low", "normal", "high"'),
        ("/reason", "must be at least 3 characters long"),
    ]


def test_required_fields_are_reported_at_their_own_path() -> None:
    assert errors({}) == [("/approved", "is required"), ("/reason", "is required")]


def test_the_design_example_form() -> None:
    schema = {"type": "object", "properties": {"approved": {"type": "boolean"}}, "required": ["approved"]}
    assert check_form_schema(schema) == []
    assert validate_form_data(schema, {}) == [FormError(path="/approved", message="is required")]
    assert validate_form_data(schema, {"approved": "yes"}) == [
        FormError(path="/approved", message="must be true or false")
    ]
    assert validate_form_data(schema, {"approved": True}) == []


def test_nested_objects_and_lists() -> None:
    data = with_changes(
        address={"street": 5, "zip": "3511 AB", "country": "NL"},
        lines=[{"sku": "A", "qty": 1}, {"sku": "B"}, {"qty": 0, "sku": "C"}],
    )
    assert errors(data) == [
        ("/address/city", "is required"),
        ("/address/country", "is not a field of this form"),
        ("/address/street", "must be a string"),
        ("/address/zip", "must match the pattern ^[0-9]{4}[A-Z]{2}$"),
        ("/lines/1/qty", "is required"),
        ("/lines/2/qty", "must be at least 1"),
    ]


def test_list_indexes_sort_numerically() -> None:
    lines = [{"sku": "S", "qty": 1} for _ in range(12)]
    lines[2]["qty"] = 0
    lines[10]["qty"] = 0
    assert [path for path, _ in errors(with_changes(lines=lines))] == ["/lines/2/qty", "/lines/10/qty"]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("priority", "urgent", 'must be one of: "low", "normal", "high"'),
        ("priority", None, 'must be one of: "low", "normal", "high"'),
        ("amount", 10_000.01, "must be at most 10000"),
        ("amount", -0.5, "must be at least 0"),
        ("quantity", 0, "must be greater than 0"),
        ("reason", "x" * 201, "must be at most 200 characters long"),
        ("lines", [{"sku": "S", "qty": 1}] * 21, "must have at most 20 items"),
    ],
)
def test_enums_and_bounds(field: str, value: Any, message: str) -> None:
    assert errors(with_changes(**{field: value})) == [(f"/{field}", message)]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("quantity", 2.5, "must be an integer"),
        ("quantity", "3", "must be an integer"),
        ("quantity", True, "must be an integer"),  # JSON true is not 1
        ("amount", "12", "must be a number"),
        ("amount", False, "must be a number"),
        ("approved", 1, "must be true or false"),
        ("approved", "true", "must be true or false"),
        ("approved", None, "must be true or false"),
    ],
)
def test_integer_number_and_boolean_types(field: str, value: Any, message: str) -> None:
    assert errors(with_changes(**{field: value})) == [(f"/{field}", message)]


def test_integral_numbers_are_integers() -> None:
    # JSON Schema 2020-12: 3.0 is an integer (JSON has one number type).
    assert errors(with_changes(quantity=3.0, amount=7)) == []


@pytest.mark.parametrize(
    ("field", "value", "ok"),
    [
        ("decided_on", "2025-03-01", True),
        ("decided_on", "2024-02-29", True),
        ("decided_on", "2025-02-29", False),
        ("decided_on", "2025-3-1", False),
        ("decided_on", "01-03-2025", False),
        ("decided_on", "2025-03-01T10:00:00Z", False),
        ("follow_up_at", "2025-03-08T09:30:00Z", True),
        ("follow_up_at", "2025-03-08t09:30:00.123z", True),
        ("follow_up_at", "2025-03-08 09:30:00", False),
        ("follow_up_at", "2025-03-08T09:30:00", False),  # RFC 3339 needs an offset
        ("follow_up_at", "2025-03-08", False),
        ("contact", "ada@example.com", True),
        ("contact", "ada@localhost", True),
        ("contact", "ada.example.com", False),
        ("contact", "ada lovelace@example.com", False),
        ("contact", "@example.com", False),
    ],
)
def test_formats(field: str, value: str, ok: bool) -> None:
    found = errors(with_changes(**{field: value}))
    assert found == ([] if ok else [(f"/{field}", found[0][1])])


def test_format_messages() -> None:
    data = with_changes(decided_on="tomorrow", follow_up_at="later", contact="nobody")
    assert errors(data) == [
        ("/contact", "must be an email address"),
        ("/decided_on", "must be a date (YYYY-MM-DD)"),
        ("/follow_up_at", "must be a date and time (RFC 3339, e.g. 2024-05-01T09:30:00Z)"),
    ]


def test_combinators_and_other_keywords() -> None:
    schema = {
        "type": "object",
        "properties": {
            "choice": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
            "code": {"const": "X1"},
            "tags": {"type": "array", "uniqueItems": True, "minItems": 1},
            "step": {"type": "number", "multipleOf": 0.5},
            "name": {"type": ["string", "null"]},
        },
        "dependentRequired": {"card": ["expiry"]},
        "additionalProperties": True,
    }
    assert check_form_schema(schema) == []
    data = {"choice": 1.5, "code": "X2", "tags": ["a", "a"], "step": 0.3, "name": 1, "card": "4111"}
    assert errors(data, schema) == [
        ("/choice", "must match exactly one of the allowed forms"),
        ("/code", 'must be "X1"'),
        ("/expiry", "is required when 'card' is given"),
        ("/name", "must be a string or null"),
        ("/step", "must be a multiple of 0.5"),
        ("/tags", "must not contain the same item twice"),
    ]


def test_pointer_escapes_slash_and_tilde_in_names() -> None:
    schema = {"type": "object", "required": ["a/b", "c~d"]}
    assert errors({}, schema) == [("/a~1b", "is required"), ("/c~0d", "is required")]


def test_local_references_are_followed() -> None:
    schema = {
        "type": "object",
        "$defs": {"money": {"type": "number", "minimum": 0}},
        "properties": {"net": {"$ref": "#/$defs/money"}, "gross": {"$ref": "#/$defs/money"}},
    }
    assert check_form_schema(schema) == []
    assert errors({"net": -1, "gross": 1}, schema) == [("/net", "must be at least 0")]


def test_messages_do_not_echo_long_values() -> None:
    (message,) = [e.message for e in validate_form_data(REVIEW, with_changes(approved="x" * 10_000))]
    assert len(message) < 100


def test_the_empty_schema_is_no_form() -> None:
    assert check_form_schema({}) == []
    assert validate_form_data({}, {"anything": [1, 2]}) == []


def test_validators_are_cached_by_canonical_json() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    reordered = {"required": ["n"], "properties": {"n": {"type": "integer"}}, "type": "object"}
    validate_form_data(schema, {"n": 1})
    before = _validator.cache_info()
    assert validate_form_data(reordered, {}) == [FormError(path="/n", message="is required")]
    after = _validator.cache_info()
    assert (after.hits, after.misses) == (before.hits + 1, before.misses)


def test_form_errors_are_frozen_wire_values() -> None:
    error = FormError(path="/approved", message="is required")
    with pytest.raises(AttributeError):
        error.path = "/x"  # type: ignore[misc]
    assert msgspec.json.decode(msgspec.json.encode(error)) == {"path": "/approved", "message": "is required"}


def test_an_invalid_schema_raises_when_used_for_validation() -> None:
    with pytest.raises(FormSchemaError) as caught:
        validate_form_data({"type": "objekt"}, {})
    assert caught.value.errors[0].path == "/type"
    with pytest.raises(FormSchemaError, match="not JSON"):
        validate_form_data({"type": "object", "minProperties": float("inf")}, {})


# -- check_form_schema -----------------------------------------------------------------------------


def test_an_unknown_type_is_reported() -> None:
    assert check_form_schema({"type": "objekt"}) == [
        FormError(
            path="/type",
            message='"objekt" is not a JSON Schema type '
            "(use array, boolean, integer, null, number, object or string)",
        )
    ]


def test_properties_must_be_an_object() -> None:
    found = check_form_schema({"type": "object", "properties": 5})
    assert [e.path for e in found] == ["/properties"]


def test_every_schema_problem_is_listed() -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "strin"},
            "b": {"minLength": -1},
            "c": {"pattern": "("},
            "d": {"required": "x"},
        },
    }
    assert [e.path for e in check_form_schema(schema)] == [
        "/properties/a/type",
        "/properties/b/minLength",
        "/properties/c/pattern",
        "/properties/d/required",
    ]


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string"},
        {"type": "array", "items": {"type": "string"}},
        {"properties": {"a": {"type": "string"}}},
        {"type": ["object", "null"]},
    ],
)
def test_the_root_must_be_an_object(schema: dict[str, Any]) -> None:
    assert check_form_schema(schema) == [
        FormError(path="/type", message='the root of a form schema must have "type": "object"')
    ]


@pytest.mark.parametrize(
    ("schema", "path"),
    [
        (
            {"type": "object", "properties": {"a": {"$ref": "https://example.com/a.json"}}},
            "/properties/a/$ref",
        ),
        ({"type": "object", "properties": {"a": {"$ref": "a.json#/x"}}}, "/properties/a/$ref"),
        ({"type": "object", "allOf": [{"$ref": "file:///etc/passwd"}]}, "/allOf/0/$ref"),
        ({"type": "object", "$ref": "https://json-schema.org/draft/2020-12/schema"}, "/$ref"),
        ({"type": "object", "$defs": {"x": {"$dynamicRef": "http://evil/x"}}}, "/$defs/x/$dynamicRef"),
        # A property may be called "const": its schema is still a schema.
        ({"type": "object", "properties": {"const": {"$ref": "http://evil/x"}}}, "/properties/const/$ref"),
    ],
)
def test_remote_references_are_rejected(schema: dict[str, Any], path: str) -> None:
    found = check_form_schema(schema)
    assert [e.path for e in found] == [path]
    assert "only references inside the schema" in found[0].message


def test_a_ref_in_data_is_not_a_reference() -> None:
    schema = {"type": "object", "properties": {"x": {"const": {"$ref": "http://example.com"}}}}
    assert check_form_schema(schema) == []


def test_a_dangling_local_reference_is_rejected() -> None:
    schema = {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}
    assert check_form_schema(schema) == [
        FormError(path="/properties/a/$ref", message="reference '#/$defs/missing' does not resolve")
    ]


def test_remote_references_are_never_fetched_even_unchecked() -> None:
    # Skipping check_form_schema must not open a network connection: the registry cannot retrieve.
    schema = {"type": "object", "properties": {"a": {"$ref": "http://127.0.0.1:9/never.json"}}}
    validator = Draft202012Validator(schema, registry=_NO_RETRIEVAL)
    with pytest.raises(Unresolvable, match=r"never\.json"):
        list(validator.iter_errors({"a": 1}))


def test_other_drafts_are_refused() -> None:
    schema = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object"}
    assert [e.path for e in check_form_schema(schema)] == ["/$schema"]
    assert (
        check_form_schema({"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object"}) == []
    )


def test_depth_limit() -> None:
    def nested(levels: int) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "string"}
        for _ in range(levels):
            schema = {"type": "object", "properties": {"a": schema}}
        return schema

    assert check_form_schema(nested(15)) == []  # 31 containers deep
    found = check_form_schema(nested(16))
    assert found == [
        FormError(path="", message=f"the schema is nested more than {MAX_SCHEMA_DEPTH} levels deep")
    ]
    # Far deeper than Python's recursion limit: refused without recursing.
    assert len(check_form_schema(nested(50_000))) == 1


def test_size_limit() -> None:
    big = {"type": "object", "properties": {f"field_{n}": {"type": "string"} for n in range(12_000)}}
    (error,) = check_form_schema(big)
    assert error.path == ""
    assert error.message.endswith(f"over the limit of {MAX_SCHEMA_BYTES}")


def test_a_schema_that_is_not_json() -> None:
    found = check_form_schema({"type": "object", "properties": {"a": {"minimum": float("nan")}}})
    assert len(found) == 1
    assert found[0].message.startswith("the schema is not JSON")
