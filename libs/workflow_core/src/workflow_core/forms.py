"""Human-task forms: JSON Schema 2020-12 checked at registration, task data validated at completion.

A human step's ``form_schema`` describes the object a person submits to complete the task. Two
checks use it:

* :func:`check_form_schema` when a definition is validated: the schema must itself be valid JSON
  Schema 2020-12 (checked against the metaschema), describe an object, be self-contained, and stay
  within size limits.
* :func:`validate_form_data` when a task is completed: every problem with the submitted data, each
  with the path of the field it belongs to, so that a form can show it next to that field.

Paths are JSON Pointers (RFC 6901): ``""`` is the whole object, ``"/approved"`` a top-level field,
``"/address/zip"`` a nested one, ``"/items/0/qty"`` a field of a list's first element; ``~`` and
``/`` inside a name are escaped as ``~0`` and ``~1``. In :func:`check_form_schema` results the
pointer goes into the schema (``"/properties/age/type"``); in :func:`validate_form_data` results into
the data. A missing required field is reported at the field's own path (``"/approved"``), not at
the object that lacks it, and so is a field that ``additionalProperties: false`` forbids.

Messages are written here for the common keywords (``"must be an integer"``, ``"is required"``,
``"must be at most 10"``) rather than taken from ``jsonschema``, so they read well in a form, do not
echo long submitted values, and stay the same across ``jsonschema`` releases.

Choices:

* ``{}`` means "no form": it accepts any object and passes :func:`check_form_schema` (a human step
  without fields is a plain "done" button). Any other schema must have ``"type": "object"`` at the
  root.
* References: only fragment references inside the schema itself (``#/$defs/address``, ``#anchor``)
  are allowed; anything else is rejected, and validators use a registry that cannot retrieve, so
  nothing is ever fetched.
* Formats are asserted (not just annotations): ``date`` (``YYYY-MM-DD``), ``date-time`` and ``time``
  (RFC 3339), ``email`` (one ``@``, no spaces, something on both sides: deliverability is not
  checked), and the other formats ``jsonschema`` checks without extra packages or network
  (``ipv4``, ``ipv6``, ``uuid``, ``regex``, ...). Unknown formats are ignored, as the spec says.
* Limits: a schema nested deeper than :data:`MAX_SCHEMA_DEPTH` containers or larger than
  :data:`MAX_SCHEMA_BYTES` of canonical JSON is rejected before anything else looks at it.
* Validators are built once per schema and cached, keyed by the schema's canonical JSON (sorted keys,
  no whitespace), so equal schemas share one validator whatever their key order.

Errors: an invalid schema given to :func:`validate_form_data` (which callers should have checked at
registration) raises :class:`FormSchemaError`; invalid data never raises, it is reported.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Final

import msgspec
from jsonschema import Draft202012Validator, FormatChecker, ValidationError
from referencing import Registry
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

__all__ = [
    "MAX_SCHEMA_BYTES",
    "MAX_SCHEMA_DEPTH",
    "FormError",
    "FormSchemaError",
    "check_form_schema",
    "validate_form_data",
]

MAX_SCHEMA_DEPTH: Final = 32
"""Deepest nesting of objects and arrays a form schema may have (a form 5 levels deep is already a
lot; the bound keeps recursion in the validator and in JSON encoding far from Python's limit)."""

MAX_SCHEMA_BYTES: Final = 256 * 1024
"""Largest canonical JSON encoding of a form schema, in bytes (a form with hundreds of fields and long
enums fits; the bound keeps definitions small, since every stored version carries its forms)."""

_DRAFT_2020_12: Final = "https://json-schema.org/draft/2020-12/schema"
_VALIDATOR_CACHE_SIZE: Final = 256
_MAX_MESSAGE: Final = 200
_MAX_ENUM_SHOWN: Final = 10

# No `retrieve` callable: a reference outside the schema raises Unresolvable instead of being fetched
# (jsonschema's default registry would download it, with only a deprecation warning).
_NO_RETRIEVAL: Final[Registry[Any]] = Registry()


class FormError(msgspec.Struct, frozen=True, kw_only=True):
    """One problem with a form schema or with submitted form data.

    A msgspec Struct, so it goes into HTTP problem details and NATS messages as ``{path, message}``.
    """

    path: str
    """JSON Pointer of the offending field (``"/approved"``), ``""`` for the whole object."""

    message: str
    """What is wrong, a short sentence without the field name (the path says which field)."""


class FormSchemaError(ValueError):
    """A form schema given to :func:`validate_form_data` is not valid; see :func:`check_form_schema`.

    Attributes:
        errors: Every problem with the schema.
    """

    def __init__(self, errors: Sequence[FormError]) -> None:
        self.errors = list(errors)
        first = self.errors[0] if self.errors else FormError(path="", message="invalid")
        more = f" (and {len(self.errors) - 1} more)" if len(self.errors) > 1 else ""
        super().__init__(f"invalid form schema at {first.path or '/'}: {first.message}{more}")


def check_form_schema(schema: Mapping[str, Any], /) -> list[FormError]:
    """Check that a form schema is valid JSON Schema 2020-12 for an object, self-contained and small.

    Args:
        schema: The form schema, as parsed from JSON.

    Returns:
        Every problem, sorted by path (JSON Pointers into the schema); ``[]`` if the schema is fine.
    """
    problem = _check_shape(schema)
    if problem is not None:
        return [problem]
    if not schema:
        return []  # no form: any object will do
    errors: list[FormError] = []
    declared = schema.get("$schema", _DRAFT_2020_12)
    if declared != _DRAFT_2020_12:
        errors.append(
            FormError(path="/$schema", message=f"only JSON Schema 2020-12 is supported ({_DRAFT_2020_12})")
        )
    else:
        errors.extend(
            FormError(path=_pointer(error.absolute_path), message=_schema_message(error))
            for error in _iter_errors(_METASCHEMA_VALIDATOR, schema)
        )
    if schema.get("type") != "object" and not any(error.path == "/type" for error in errors):
        errors.append(FormError(path="/type", message='the root of a form schema must have "type": "object"'))
    errors.extend(_check_references(schema))
    return _sorted_unique(errors)


def validate_form_data(schema: Mapping[str, Any], data: Mapping[str, Any], /) -> list[FormError]:
    """Validate submitted form data against its form schema.

    Args:
        schema: The form schema (checked by :func:`check_form_schema` when the definition was
            registered).
        data: The submitted data, as parsed from JSON.

    Returns:
        Every problem, sorted by path (JSON Pointers into the data; list indexes in numeric order),
        each path once per message; ``[]`` if the data is valid.

    Raises:
        FormSchemaError: The schema itself is not valid.
    """
    try:
        canonical = _canonical(schema)
    except (TypeError, ValueError) as exc:
        raise FormSchemaError([FormError(path="", message=f"the schema is not JSON: {exc}")]) from exc
    validator = _validator(canonical)
    try:
        errors = list(_data_errors(_iter_errors(validator, dict(data))))
    except Unresolvable as exc:  # a reference check_form_schema could not follow (under a nested $id)
        raise FormSchemaError([FormError(path="", message=f"unresolvable reference: {exc}")]) from exc
    except RecursionError:
        # Only a recursive schema ($ref back to a parent) descends as deep as the data goes.
        return [FormError(path="", message="is nested too deeply to validate")]
    return _sorted_unique(errors)


# -- schema checks ---------------------------------------------------------------------------------

_FORMAT_CHECKER: Final = FormatChecker()  # an instance: its checkers are a copy, the override is local


@_FORMAT_CHECKER.checks("email")
def _is_email(instance: object) -> bool:
    # jsonschema's own check is only `"@" in instance`; this also refuses spaces and empty sides.
    # Deliverability needs DNS, which this package must not do.
    return not isinstance(instance, str) or re.fullmatch(r"[^@\s]+@[^@\s]+", instance) is not None


_METASCHEMA_VALIDATOR: Final = Draft202012Validator(
    Draft202012Validator.META_SCHEMA, format_checker=_FORMAT_CHECKER, registry=_NO_RETRIEVAL
)


def _check_shape(schema: Mapping[str, Any]) -> FormError | None:
    """Depth first (iteratively, so a hostile schema cannot exhaust the stack), then JSON-ness and size."""
    depth = _depth(schema, limit=MAX_SCHEMA_DEPTH)
    if depth > MAX_SCHEMA_DEPTH:
        return FormError(path="", message=f"the schema is nested more than {MAX_SCHEMA_DEPTH} levels deep")
    try:
        size = len(_canonical(schema).encode())
    except (TypeError, ValueError) as exc:
        return FormError(path="", message=f"the schema is not JSON: {exc}")
    if size > MAX_SCHEMA_BYTES:
        return FormError(
            path="", message=f"the schema is {size} bytes as JSON, over the limit of {MAX_SCHEMA_BYTES}"
        )
    return None


def _depth(value: object, *, limit: int) -> int:
    """Nesting depth of dicts and lists in `value`; stops counting once past `limit`."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        children: list[object]
        if isinstance(item, Mapping):
            mapping: Mapping[object, object] = item  # pyright: ignore[reportUnknownVariableType]
            children = list(mapping.values())
        elif isinstance(item, list | tuple):
            children = list(item)  # pyright: ignore[reportUnknownArgumentType]
        else:
            continue
        deepest = max(deepest, level)
        if deepest > limit:
            break
        stack.extend((child, level + 1) for child in children)
    return deepest


def _check_references(schema: Mapping[str, Any]) -> list[FormError]:
    """Reject references that leave the schema; check that the local ones resolve."""
    errors: list[FormError] = []
    resolver = _NO_RETRIEVAL.resolver_with_root(DRAFT202012.create_resource(dict(schema)))
    for path, keyword, target, under_nested_id in _references(schema):
        pointer = _pointer([*path, keyword])
        if not target.startswith("#"):
            errors.append(
                FormError(
                    path=pointer,
                    message=f"only references inside the schema (#/...) are allowed, not {target!r}",
                )
            )
            continue
        if under_nested_id:
            continue  # resolves against the nested resource, not the root; validation will tell
        try:
            resolver.lookup(target)
        except Unresolvable:
            errors.append(FormError(path=pointer, message=f"reference {target!r} does not resolve"))
    return errors


_DATA_KEYWORDS: Final = frozenset({"const", "enum", "default", "examples"})
_SCHEMA_MAP_KEYWORDS: Final = frozenset(
    {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
)


def _references(
    schema: Mapping[str, Any],
) -> Iterator[tuple[list[str | int], str, str, bool]]:
    """Every ``$ref`` / ``$dynamicRef`` string: (path to its object, keyword, target, under a nested $id).

    Conservative: every value is taken for a schema except the values of keywords that hold data
    (``const``, ``enum``, ...), and the names under ``properties`` & co. are never taken for keywords.
    """
    stack: list[tuple[object, list[str | int], bool, bool]] = [(schema, [], False, False)]
    while stack:
        node, path, nested_id, names = stack.pop()
        if isinstance(node, Mapping):
            mapping: Mapping[str, object] = node  # pyright: ignore[reportUnknownVariableType]
            if names:  # {name: schema, ...}
                stack.extend((child, [*path, key], nested_id, False) for key, child in mapping.items())
                continue
            nested_id = nested_id or (bool(path) and isinstance(mapping.get("$id"), str))
            for keyword in ("$ref", "$dynamicRef"):
                target = mapping.get(keyword)
                if isinstance(target, str):
                    yield path, keyword, target, nested_id
            stack.extend(
                (child, [*path, key], nested_id, key in _SCHEMA_MAP_KEYWORDS)
                for key, child in mapping.items()
                if key not in _DATA_KEYWORDS
            )
        elif isinstance(node, list):
            items: list[object] = node  # pyright: ignore[reportUnknownVariableType]
            stack.extend((child, [*path, index], nested_id, False) for index, child in enumerate(items))


def _schema_message(error: ValidationError) -> str:
    """Messages for schema authors: jsonschema's own, with the one that confuses people explained."""
    if error.absolute_path and error.absolute_path[-1] == "type" and error.validator == "anyOf":
        return (
            f"{_short_json(error.instance)} is not a JSON Schema type (use array, boolean, integer, "
            "null, number, object or string)"
        )
    return _truncate(error.message)


@functools.lru_cache(maxsize=_VALIDATOR_CACHE_SIZE)
def _validator(canonical: str) -> Draft202012Validator:
    # Built from the canonical text rather than the caller's mapping, so that the cached validator
    # can never hold a schema that differs from its key (or one the caller mutates later).
    schema = json.loads(canonical)
    problems = check_form_schema(schema)
    if problems:
        raise FormSchemaError(problems)
    return Draft202012Validator(schema, format_checker=_FORMAT_CHECKER, registry=_NO_RETRIEVAL)


def _canonical(schema: Mapping[str, Any]) -> str:
    try:
        return json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except RecursionError as exc:  # a self-referencing dict
        raise ValueError("the schema is nested too deeply") from exc


# -- data errors -----------------------------------------------------------------------------------

_TYPE_NAMES: Final = {
    "object": "an object",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}
_FORMAT_NAMES: Final = {
    "date": "a date (YYYY-MM-DD)",
    "date-time": "a date and time (RFC 3339, e.g. 2024-05-01T09:30:00Z)",
    "time": "a time (RFC 3339, e.g. 09:30:00Z)",
    "email": "an email address",
    "uuid": "a UUID",
    "ipv4": "an IPv4 address",
    "ipv6": "an IPv6 address",
    "regex": "a regular expression",
}


def _data_errors(errors: Iterable[ValidationError]) -> Iterator[FormError]:
    for error in errors:
        path = list(error.absolute_path)
        value: Any = error.validator_value
        instance: Any = error.instance
        match error.validator:
            case "required":
                # jsonschema yields one error per missing name, in order, with the parent's path;
                # report each missing name at its own path (duplicates are removed later).
                for name in value:
                    if name not in instance:
                        yield FormError(path=_pointer([*path, name]), message="is required")
            case "dependentRequired":
                for trigger, needed in value.items():
                    if trigger in instance:
                        for name in needed:
                            if name not in instance:
                                yield FormError(
                                    path=_pointer([*path, name]),
                                    message=f"is required when {trigger!r} is given",
                                )
            case "additionalProperties" if value is False:
                for name in _additional_properties(instance, error.schema):
                    yield FormError(path=_pointer([*path, name]), message="is not a field of this form")
            case _:
                yield FormError(path=_pointer(path), message=_data_message(error))


def _additional_properties(instance: Mapping[str, Any], schema: Any) -> list[str]:
    properties = schema.get("properties", {})
    patterns = [re.compile(pattern) for pattern in schema.get("patternProperties", {})]
    return [
        name
        for name in instance
        if name not in properties and not any(pattern.search(name) for pattern in patterns)
    ]


def _data_message(error: ValidationError) -> str:
    value: Any = error.validator_value
    match error.validator:
        case "type":
            names = [value] if isinstance(value, str) else list(value)
            return "must be " + " or ".join(_TYPE_NAMES.get(name, name) for name in names)
        case "enum":
            shown = ", ".join(_short_json(option) for option in value[:_MAX_ENUM_SHOWN])
            more = ", ..." if len(value) > _MAX_ENUM_SHOWN else ""
            return f"must be one of: {shown}{more}"
        case "const":
            return f"must be {_short_json(value)}"
        case "minimum":
            return f"must be at least {_short_json(value)}"
        case "maximum":
            return f"must be at most {_short_json(value)}"
        case "exclusiveMinimum":
            return f"must be greater than {_short_json(value)}"
        case "exclusiveMaximum":
            return f"must be less than {_short_json(value)}"
        case "multipleOf":
            return f"must be a multiple of {_short_json(value)}"
        case "minLength":
            return f"must be at least {value} character{'s' if value != 1 else ''} long"
        case "maxLength":
            return f"must be at most {value} character{'s' if value != 1 else ''} long"
        case "pattern":
            return f"must match the pattern {value}"
        case "format":
            return f"must be {_FORMAT_NAMES.get(value, f'a valid {value}')}"
        case "minItems":
            return f"must have at least {value} item{'s' if value != 1 else ''}"
        case "maxItems":
            return f"must have at most {value} item{'s' if value != 1 else ''}"
        case "uniqueItems":
            return "must not contain the same item twice"
        case "minProperties":
            return f"must have at least {value} field{'s' if value != 1 else ''}"
        case "maxProperties":
            return f"must have at most {value} field{'s' if value != 1 else ''}"
        case "anyOf":
            return "does not match any of the allowed forms"
        case "oneOf":
            return "must match exactly one of the allowed forms"
        case "not":
            return "is not allowed"
        case _:
            return _truncate(error.message)


# -- helpers ---------------------------------------------------------------------------------------


def _iter_errors(validator: Draft202012Validator, instance: Mapping[str, Any]) -> Iterator[ValidationError]:
    # The typeshed stubs leave one overload of iter_errors partly untyped; pin the type here once.
    errors: Iterator[ValidationError] = validator.iter_errors(instance)  # pyright: ignore[reportUnknownMemberType]
    return errors


def _pointer(path: Iterable[str | int]) -> str:
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


def _sort_key(error: FormError) -> tuple[tuple[tuple[int, int, str], ...], str]:
    # List indexes sort numerically ("/items/2" before "/items/10"); names sort as text.
    parts = error.path.split("/")[1:]
    return (
        tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in parts),
        error.message,
    )


def _sorted_unique(errors: Iterable[FormError]) -> list[FormError]:
    return sorted(set(errors), key=_sort_key)


def _short_json(value: object) -> str:
    return _truncate(json.dumps(value, ensure_ascii=False, default=repr), limit=60)


def _truncate(text: str, *, limit: int = _MAX_MESSAGE) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
