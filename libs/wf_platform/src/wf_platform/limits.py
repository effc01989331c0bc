"""Request document limits and hardened JSON/YAML parsing.

Stable error codes (the ``code`` member of the problem body):

- ``payload_too_large`` (413): the request body exceeds ``max_body_bytes`` (enforced by Litestar
  before the handler runs, mapped to our problem body);
- ``document_too_large`` (413): a document exceeds a route's own limit (e.g. a definition's size);
- ``invalid_document`` (422): not parseable JSON/YAML; the message names the line and column;
- ``nesting_too_deep`` (422): deeper than ``max_json_depth``;
- ``unsupported_media_type`` (415): neither JSON nor YAML.

YAML is parsed with a safe loader that also refuses aliases (no "billion laughs"), duplicate keys
(silently last-wins otherwise) and keeps timestamps as strings (JSON has no dates).
"""

from __future__ import annotations

import json
from typing import Any, Literal, cast

import yaml
from litestar.types import ASGIApp, HTTPResponseStartEvent, Receive, ReceiveMessage, Scope, Send
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError

from wf_platform.problems import (
    PROBLEM_MEDIA_TYPE,
    FieldError,
    PayloadTooLargeError,
    UnprocessableError,
    UnsupportedMediaTypeError,
    problem_body,
)

__all__ = ["BodyLimitMiddleware", "DocumentFormat", "check_depth", "detect_format", "parse_document"]

DocumentFormat = Literal["json", "yaml"]

_JSON_TYPES = {"application/json", "text/json"}
_YAML_TYPES = {"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"}


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader without aliases, duplicate keys or implicit timestamps."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):  # pyright: ignore[reportUnknownMemberType]
            event: Any = cast(Any, self.peek_event())  # pyright: ignore[reportUnknownMemberType]
            mark: Any = event.start_mark
            raise ComposerError(None, None, "aliases are not allowed", mark)
        return super().compose_node(parent, index)  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
            try:
                duplicate = key in seen
            except TypeError:
                raise ConstructorError(
                    None, None, "mapping keys must be scalars", key_node.start_mark
                ) from None
            if duplicate:
                raise ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]


_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def detect_format(content_type: str | None, body: bytes, /) -> DocumentFormat:
    """JSON or YAML from the ``Content-Type`` (``+json``/``+yaml`` suffixes too), else by sniffing."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media in _JSON_TYPES or media.endswith("+json"):
        return "json"
    if media in _YAML_TYPES or media.endswith("+yaml"):
        return "yaml"
    if media and media not in {"text/plain", "application/octet-stream"}:
        raise UnsupportedMediaTypeError(
            f"send application/json or application/yaml, not {media}", code="unsupported_media_type"
        )
    return "json" if body.lstrip()[:1] in {b"{", b"["} else "yaml"


def check_depth(value: Any, /, *, max_depth: int) -> None:
    """Raise a 422 ``nesting_too_deep`` problem if ``value`` nests deeper than ``max_depth``."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > max_depth:
                raise UnprocessableError(
                    f"the document nests deeper than {max_depth} levels",
                    code="nesting_too_deep",
                    errors=[FieldError(path="", message=f"nesting deeper than {max_depth} levels")],
                )
            children: list[Any] = list(item.values()) if isinstance(item, dict) else list(item)  # pyright: ignore[reportUnknownArgumentType, reportUnknownMemberType]
            stack.extend((child, depth + 1) for child in children)


def parse_document(
    body: bytes,
    /,
    *,
    content_type: str | None,
    max_depth: int = 32,
    max_bytes: int | None = None,
) -> tuple[Any, DocumentFormat]:
    """Parse a JSON or YAML request document within the limits; return it and its format."""
    if max_bytes is not None and len(body) > max_bytes:
        raise PayloadTooLargeError(f"the document exceeds {max_bytes} bytes", code="document_too_large")
    fmt = detect_format(content_type, body)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _invalid(f"not UTF-8 (byte {exc.start})") from None
    try:
        if fmt == "json":
            try:
                value: Any = json.loads(text)
            except json.JSONDecodeError as exc:
                raise _invalid(f"line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
        else:
            try:
                value = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - _StrictLoader is a SafeLoader
            except yaml.MarkedYAMLError as exc:
                mark = exc.problem_mark or exc.context_mark
                where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
                problem = " ".join(p for p in (exc.context, exc.problem) if p)
                raise _invalid(f"{where}{problem or 'invalid YAML'}") from None
            except yaml.YAMLError as exc:
                raise _invalid(f"invalid YAML: {exc}") from None
    except RecursionError:
        raise UnprocessableError(
            f"the document nests deeper than {max_depth} levels",
            code="nesting_too_deep",
            errors=[FieldError(path="", message=f"nesting deeper than {max_depth} levels")],
        ) from None
    check_depth(value, max_depth=max_depth)
    return value, fmt


def _invalid(message: str) -> UnprocessableError:
    return UnprocessableError(
        "the document cannot be parsed",
        code="invalid_document",
        errors=[FieldError(path="", message=message)],
    )


class BodyLimitMiddleware:
    """Refuses request bodies over ``max_bytes`` with a 413 ``payload_too_large`` problem.

    A declared ``Content-Length`` over the limit is refused before the body is read; a body without
    one (chunked) is counted as it streams and refused when it crosses the limit.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await self._refuse(scope, receive, send)
                    return
                break
        received = 0

        async def counting_receive() -> ReceiveMessage:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise PayloadTooLargeError(f"the request body exceeds {self.max_bytes} bytes")
            return message

        await self.app(scope, counting_receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        del scope, receive
        body = problem_body(
            413, code="payload_too_large", detail=f"the request body exceeds {self.max_bytes} bytes"
        )
        start: HTTPResponseStartEvent = {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
        await send(start)
        await send({"type": "http.response.body", "body": body, "more_body": False})
