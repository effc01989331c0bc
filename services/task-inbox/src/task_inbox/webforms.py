"""HTML forms from a task's ``form_schema`` (JSON Schema 2020-12), and form posts back into JSON.

What is rendered (everything else falls back to a JSON text area, still validated by the schema):

==========================================  =====================================================
schema                                      control
==========================================  =====================================================
``string``                                  ``<input type=text>`` (``minLength``/``maxLength``/``pattern``)
``string`` + ``maxLength > 200`` or hint    ``<textarea>`` (long text; hint ``{"widget": "textarea"}``)
``string`` + ``format: date``               ``<input type=date>``
``string`` + ``format: date-time``          ``<input type=datetime-local>`` (taken as UTC)
``string`` + ``format: email``              ``<input type=email>``
``number`` / ``integer``                    ``<input type=number>`` (``minimum``/``maximum``, step)
``boolean``                                 a Yes / No select (so "required" means "answer it")
``enum`` (any type)                         ``<select>``
``object`` (nested)                         ``<fieldset>`` with a ``<legend>``
==========================================  =====================================================

Every control has a ``<label>``; ``title`` is the label (else the field name), ``description`` the
help text. UI hints (the step's ``ui_hints``) are keyed by the field's JSON Pointer or dotted name:
``{"/comment": {"widget": "textarea", "label": "...", "help": "...", "placeholder": "..."}}``; a top-level
``"order": ["a", "b"]`` (and an object field's own ``order``) fixes the field order, else required
fields come first in their listed order.

Inputs are named by dotted path (``address.zip``). Parsing is lenient on purpose: a value that does
not convert (``"abc"`` for an integer) is kept as the string, so the schema validator reports it
with its own message at the field's path, next to the field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["FormField", "build_fields", "errors_by_pointer", "parse_form"]

Kind = Literal[
    "text",
    "textarea",
    "date",
    "datetime",
    "email",
    "number",
    "integer",
    "boolean",
    "select",
    "json",
    "fieldset",
]

_LONG_TEXT = 200


@dataclass(kw_only=True)
class FormField:
    """One control (or fieldset) of a task form, ready for the template."""

    name: str
    """The input name (dotted path)."""
    pointer: str
    """JSON Pointer of the field in the data (errors are keyed by it)."""
    html_id: str
    label: str
    kind: Kind
    required: bool = False
    help: str | None = None
    value: str = ""
    """The current value as the control shows it."""
    options: list[tuple[str, str]] = field(default_factory=list[tuple[str, str]])
    """(value, label) for selects."""
    attrs: dict[str, str] = field(default_factory=dict[str, str])
    """Extra HTML attributes (min, max, step, minlength, maxlength, pattern, placeholder)."""
    errors: list[str] = field(default_factory=list[str])
    children: list[FormField] = field(default_factory=list["FormField"])


def _escape_token(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")


def _as_mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}  # pyright: ignore[reportUnknownVariableType]


def _type_of(schema: Mapping[str, Any]) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, list):
        others = [k for k in kind if k != "null"]  # pyright: ignore[reportUnknownVariableType]
        return str(others[0]) if len(others) == 1 else None  # pyright: ignore[reportUnknownArgumentType]
    return kind if isinstance(kind, str) else None


def _enum_value_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _display(value: Any, kind: Kind) -> str:
    if value is None:
        return ""
    if kind == "boolean":
        return "true" if value is True else "false" if value is False else str(value)
    if kind == "select":
        return _enum_value_text(value)
    if kind == "datetime" and isinstance(value, str):
        return value.removesuffix("Z")[:16]
    if kind == "json":
        return json.dumps(value, indent=2)
    return str(value)


def _kind(schema: Mapping[str, Any], hint: Mapping[str, Any]) -> Kind:
    if "enum" in schema and isinstance(schema["enum"], list):
        return "select"
    kind = _type_of(schema)
    if kind == "object" and isinstance(schema.get("properties"), Mapping):
        return "fieldset"
    if kind == "boolean":
        return "boolean"
    if kind == "integer":
        return "integer"
    if kind == "number":
        return "number"
    if kind == "string":
        fmt = schema.get("format")
        widget = hint.get("widget")
        if widget == "textarea" or (
            isinstance(schema.get("maxLength"), int) and schema["maxLength"] > _LONG_TEXT
        ):
            return "textarea"
        if fmt == "date":
            return "date"
        if fmt == "date-time":
            return "datetime"
        if fmt == "email":
            return "email"
        return "text"
    return "json"


def build_fields(
    schema: Mapping[str, Any],
    /,
    *,
    hints: Mapping[str, Any] | None = None,
    values: Mapping[str, Any] | None = None,
    errors: Mapping[str, Sequence[str]] | None = None,
    submitted: Mapping[str, str] | None = None,
) -> list[FormField]:
    """The controls of a form schema.

    Args:
        schema: the task's form schema (an object schema, or ``{}`` for no fields).
        hints: the step's UI hints.
        values: current data (defaults come from the schema's ``default``).
        errors: messages by JSON Pointer (from :func:`errors_by_pointer`).
        submitted: the raw form post, shown back as typed after a failed submission.
    """
    hints = hints or {}
    return _fields(schema, "", "", hints, values or {}, errors or {}, submitted, order=hints.get("order"))


def _fields(
    schema: Mapping[str, Any],
    pointer: str,
    prefix: str,
    hints: Mapping[str, Any],
    values: Mapping[str, Any],
    errors: Mapping[str, Sequence[str]],
    submitted: Mapping[str, str] | None,
    *,
    order: Any = None,
) -> list[FormField]:
    properties = _as_mapping(schema.get("properties"))
    required_raw = schema.get("required")
    required_list: list[Any] = list(required_raw) if isinstance(required_raw, list) else []  # pyright: ignore[reportUnknownArgumentType]
    required = set(required_list)
    result: list[FormField] = []
    for prop_name in _ordered(properties, order, required_list):
        sub = _as_mapping(properties[prop_name])
        name = f"{prefix}{prop_name}"
        sub_pointer = f"{pointer}/{_escape_token(prop_name)}"
        hint = _as_mapping(hints.get(sub_pointer) or hints.get(name))
        kind = _kind(sub, hint)
        label = str(hint.get("label") or sub.get("title") or prop_name.replace("_", " ").capitalize())
        help_text = hint.get("help") or sub.get("description")
        html_id = "f-" + "".join(c if c.isalnum() else "-" for c in name)
        current: Any = values.get(prop_name, sub.get("default"))
        form_field = FormField(
            name=name,
            pointer=sub_pointer,
            html_id=html_id,
            label=label,
            kind=kind,
            required=prop_name in required,
            help=str(help_text) if help_text else None,
            errors=list(errors.get(sub_pointer, ())),
        )
        if kind == "fieldset":
            form_field.children = _fields(
                sub,
                sub_pointer,
                f"{name}.",
                hints,
                _as_mapping(current),
                errors,
                submitted,
                order=hint.get("order"),
            )
            result.append(form_field)
            continue
        if submitted is not None:
            form_field.value = submitted.get(name, "")
        else:
            form_field.value = _display(current, kind)
        if kind == "select":
            options: list[Any] = list(sub["enum"])
            labels_raw = hint.get("labels")
            labels: Mapping[str, Any] = _as_mapping(labels_raw)
            form_field.options = [
                (_enum_value_text(o), str(labels.get(_enum_value_text(o), o))) for o in options
            ]
        elif kind == "boolean":
            form_field.options = [("true", "Yes"), ("false", "No")]
        attrs: dict[str, str] = {}
        if kind in ("number", "integer"):
            for keyword, attr in (("minimum", "min"), ("maximum", "max")):
                if isinstance(sub.get(keyword), int | float):
                    attrs[attr] = str(sub[keyword])
            attrs["step"] = "1" if kind == "integer" else "any"
        if kind in ("text", "textarea", "email"):
            for keyword, attr in (("minLength", "minlength"), ("maxLength", "maxlength")):
                if isinstance(sub.get(keyword), int):
                    attrs[attr] = str(sub[keyword])
        if kind == "text" and isinstance(sub.get("pattern"), str):
            attrs["pattern"] = sub["pattern"]
        if hint.get("placeholder"):
            attrs["placeholder"] = str(hint["placeholder"])
        form_field.attrs = attrs
        result.append(form_field)
    return result


def _ordered(properties: Mapping[str, Any], order: Any, required: Sequence[Any]) -> list[str]:
    """Field order: the hint's ``order``, then the required fields as listed, then the rest.

    JSON object key order does not survive every store (Postgres ``jsonb`` sorts keys), so the
    author's order is taken from lists, which do.
    """
    names: list[str] = []
    for candidates in (order if isinstance(order, list) else [], required, list(properties)):  # pyright: ignore[reportUnknownVariableType]
        for name in candidates:  # pyright: ignore[reportUnknownVariableType]
            if isinstance(name, str) and name in properties and name not in names:
                names.append(name)
    return names


def errors_by_pointer(
    errors: Sequence[Any], fields: Sequence[FormField], /
) -> tuple[dict[str, list[str]], list[str]]:
    """Split ``{path, message}`` errors into those a field shows and the rest (shown above the form)."""
    known: set[str] = set()

    def collect(items: Sequence[FormField]) -> None:
        for item in items:
            known.add(item.pointer)
            collect(item.children)

    collect(fields)
    by_pointer: dict[str, list[str]] = {}
    general: list[str] = []
    for error in errors:
        path = str(getattr(error, "path", "") or "")
        message = str(getattr(error, "message", error))
        if path in known:
            by_pointer.setdefault(path, []).append(message)
        else:
            general.append(f"{path or 'form'}: {message}" if path else message)
    return by_pointer, general


def parse_form(schema: Mapping[str, Any], form: Mapping[str, str], /) -> dict[str, Any]:
    """The JSON object a form post stands for (see the module docstring for the leniency)."""
    return _parse_object(schema, "", form)


def _parse_object(schema: Mapping[str, Any], prefix: str, form: Mapping[str, str]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for prop_name, raw_sub in _as_mapping(schema.get("properties")).items():
        sub = _as_mapping(raw_sub)
        name = f"{prefix}{prop_name}"
        kind = _kind(sub, {})
        if kind == "fieldset":
            nested = _parse_object(sub, f"{name}.", form)
            if nested:
                data[prop_name] = nested
            continue
        raw = form.get(name)
        if raw is None or (raw.strip() == "" and kind != "textarea") or raw == "":
            continue  # absent: "is required" comes from the schema when it must be there
        data[prop_name] = _convert(raw, kind, sub)
    return data


def _convert(raw: str, kind: Kind, schema: Mapping[str, Any]) -> Any:
    text = raw.strip()
    if kind == "boolean":
        return {"true": True, "false": False}.get(text, text)
    if kind == "integer":
        try:
            return int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                return text
            return int(number) if number.is_integer() else number
    if kind == "number":
        try:
            number = float(text)
        except ValueError:
            return text
        return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number
    if kind == "select":
        for option in schema.get("enum", []):
            if _enum_value_text(option) == raw:
                return option
        return raw
    if kind == "datetime":
        # datetime-local has no zone: the form says UTC, and RFC 3339 needs seconds and an offset.
        return f"{text}:00Z" if len(text) == 16 else text
    if kind == "json":
        try:
            return json.loads(text)
        except ValueError:
            return text
    if kind in ("text", "email", "date"):
        return text
    return raw
