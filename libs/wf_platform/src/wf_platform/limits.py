"""Request document limits and hardened JSON/YAML parsing.

Stable error codes (the ``code`` member of the problem body):

- ``payload_too_large`` (413): the request body exceeds ``max_body_bytes`` (enforced by Litestar
  before the handler runs, mapped to our problem body);
- ``document_too_large`` (413): a document exceeds a route's own limit (e.g. a definition's size);
- ``invalid_document`` (422): not parseable JSON/YAML; the message names the line and column;
- ``nesting_too_deep`` (422): deeper than ``max_json_depth``; checked before a document is built,
  for a request body that Litestar decodes (:class:`InputGuardMiddleware`) as for a document
  parsed here, so deep nesting never costs more than a scan and never reaches a recursive parser;
- ``nul_character`` (422 in a body, 400 in the path or query): the character U+0000, which Postgres
  cannot store in ``text`` or ``jsonb``;
- ``unsupported_media_type`` (415): neither JSON nor YAML.

YAML is parsed with a safe loader that also refuses aliases (no "billion laughs"), duplicate keys
(silently last-wins otherwise), keeps timestamps as strings (JSON has no dates) and stops at the
first collection nested deeper than the limit (PyYAML's scanner is quadratic in the flow nesting
and its composer recursive: a few kB of ``[`` would otherwise cost seconds of CPU).
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from operator import add
from typing import Any, Literal, NoReturn, cast

import yaml
from litestar.types import (
    ASGIApp,
    HTTPRequestEvent,
    HTTPResponseStartEvent,
    HTTPScope,
    Receive,
    ReceiveMessage,
    Scope,
    Send,
)
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

__all__ = [
    "BodyLimitMiddleware",
    "DocumentFormat",
    "InputGuardMiddleware",
    "check_depth",
    "check_json_depth",
    "detect_format",
    "parse_document",
]

DocumentFormat = Literal["json", "yaml"]

_NUL_MESSAGE = "text may not contain the character U+0000"
_JSON_TYPES = {"application/json", "text/json"}
_YAML_TYPES = {"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"}


class _TooDeepError(yaml.MarkedYAMLError):
    """A YAML collection opens deeper than the limit (``problem_mark`` says where)."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader without aliases, duplicate keys or implicit timestamps, within a nesting limit.

    The limit is enforced twice, each time before the cost: the scanner counts flow collections
    (``[``/``{``) as it meets them, the composer counts block and flow collections as it opens them.
    """

    def __init__(self, stream: str, /, *, max_depth: int) -> None:
        super().__init__(stream)
        self.max_depth = max_depth
        self.depth = 0

    def fetch_flow_collection_start(self, TokenClass: Any) -> None:  # noqa: N803 - PyYAML's signature
        # Refused before the scanner opens one more level: its work per token grows with the level.
        if self.flow_level >= self.max_depth:  # pyright: ignore[reportUnknownMemberType]
            mark: Any = self.get_mark()  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
            self._refuse(mark)
        super().fetch_flow_collection_start(TokenClass)  # pyright: ignore[reportUnknownMemberType]

    def compose_node(self, parent: Any, index: Any) -> Any:
        event: Any = cast(Any, self.peek_event())  # pyright: ignore[reportUnknownMemberType]
        if isinstance(event, yaml.AliasEvent):
            raise ComposerError(None, None, "aliases are not allowed", event.start_mark)
        if not isinstance(event, yaml.CollectionStartEvent):
            return super().compose_node(parent, index)  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
        if self.depth >= self.max_depth:
            self._refuse(event.start_mark)
        self.depth += 1
        try:
            return super().compose_node(parent, index)  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
        finally:
            self.depth -= 1

    def _refuse(self, mark: Any, /) -> NoReturn:
        raise _TooDeepError(problem=f"nesting deeper than {self.max_depth} levels", problem_mark=mark)

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
                raise _too_deep(max_depth)
            children: list[Any] = list(item.values()) if isinstance(item, dict) else list(item)  # pyright: ignore[reportUnknownArgumentType, reportUnknownMemberType]
            stack.extend((child, depth + 1) for child in children)


# The JSON depth scan works on the bytes with C-speed operations (replace, translate, split, count)
# and no per-character Python: a few milliseconds for a usual MiB, tens at worst for a crafted one.
_OPENS_COLLECTION = re.compile(rb"[ \t\r\n]*[\[{]")
_MARKS = bytes.maketrans(b"[]{}", b"()()")
_NOT_MARKS = bytes(b for b in range(256) if b not in b'[]{}"')


def check_json_depth(body: bytes, /, *, max_depth: int) -> None:
    """Raise a 422 ``nesting_too_deep`` problem if the JSON text ``body`` nests deeper than ``max_depth``.

    A scan of the bytes, without decoding: the brackets outside strings are the structure. It never
    refuses valid JSON within the limit; on text that is not JSON it may refuse what a parser
    would refuse anyway (a YAML flow document is judged the same way: ``'`` quoting is not known).
    """
    if _json_nests_deeper(body, max_depth):
        raise _too_deep(max_depth)


def _json_nests_deeper(body: bytes, max_depth: int) -> bool:
    if not _OPENS_COLLECTION.match(body):
        return False  # a scalar (or not JSON): nothing nests
    if b"\\" in body:
        # Backslashes only escape inside strings: without them, every quote opens or closes one.
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    marks = body.translate(_MARKS, _NOT_MARKS)  # only ( ) and "
    if marks.count(b"(") <= max_depth:
        return False
    # A string without brackets is now "": dropping every "" (an empty string, or the seam of two
    # adjacent strings) leaves what is outside the strings unchanged, and most strings gone.
    marks = marks.replace(b'""', b"")
    if b'"' in marks:
        marks = b"".join(marks.split(b'"')[::2])  # even parts are outside strings
        if marks.count(b"(") <= max_depth:
            return False
    # Each pass drops every innermost pair, so a well-formed document loses one level per pass (and
    # is gone after as many passes as it has levels). Passes are cheap while they drop much; once
    # they drop little, few innermost pairs are left, hence few hills for _levels to walk.
    rest, passes = marks, 0
    while passes < max_depth:
        shorter = rest.replace(b"()", b"")
        passes += 1
        if not shorter:
            return False
        dropped = len(rest) - len(shorter)
        rest = shorter
        if dropped * 16 < len(rest):
            break
    top, low, end = _levels(rest)
    if top > max_depth:
        return True  # even without the levels the passes took away
    if top + passes <= max_depth:
        return False
    if end == low == 0:
        return True  # well-formed: exactly top + passes levels
    return _levels(marks)[0] > max_depth  # not JSON: the passes blurred the levels


def _levels(marks: bytes, /) -> tuple[int, int, int]:
    """The highest, lowest and last level along a string of ``(`` and ``)``, starting at 0."""
    # Between two valleys ")(" the string only rises then falls: a hill of ups "(" and downs ")".
    hills = marks.split(b")(")
    ups = [hill.count(b"(") for hill in hills]
    ends = list(accumulate(2 * up - len(hill) for up, hill in zip(ups, hills, strict=True)))
    starts = [0, *ends[:-1]]  # a valley goes down one and up one
    top = max(map(add, starts, ups))
    low = min(0, *ends, *(start - 1 for start in starts[1:]))
    return top, low, ends[-1]


def parse_document(
    body: bytes,
    /,
    *,
    content_type: str | None,
    max_depth: int = 32,
    max_bytes: int | None = None,
) -> tuple[Any, DocumentFormat]:
    """Parse a JSON or YAML request document within the limits; return it and its format.

    The nesting limit is checked before any value is built (a byte scan for JSON, the YAML scanner
    and composer for YAML), so a deeply nested document is refused at the cost of reading it once.
    """
    if max_bytes is not None and len(body) > max_bytes:
        raise PayloadTooLargeError(f"the document exceeds {max_bytes} bytes", code="document_too_large")
    fmt = detect_format(content_type, body)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _invalid(f"not UTF-8 (byte {exc.start})") from None
    try:
        if fmt == "json":
            check_json_depth(body, max_depth=max_depth)
            try:
                value: Any = json.loads(text)
            except json.JSONDecodeError as exc:
                raise _invalid(f"line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
        else:
            value = _load_yaml(text, max_depth=max_depth)
    except RecursionError:  # not expected within the limits above; still never a 500
        raise _too_deep(max_depth) from None
    check_depth(value, max_depth=max_depth)
    _refuse_nul(value)
    return value, fmt


def _load_yaml(text: str, /, *, max_depth: int) -> Any:
    loader = _StrictLoader(text, max_depth=max_depth)
    try:
        return loader.get_single_data()  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
    except _TooDeepError as exc:
        raise _too_deep(max_depth, where=_where(exc)) from None
    except yaml.MarkedYAMLError as exc:
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        raise _invalid(f"{_where(exc)}{problem or 'invalid YAML'}") from None
    except yaml.YAMLError as exc:
        raise _invalid(f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()  # pyright: ignore[reportUnknownMemberType]


def _where(exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    return f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""


def _too_deep(max_depth: int, *, where: str = "") -> UnprocessableError:
    return UnprocessableError(
        f"the document nests deeper than {max_depth} levels",
        code="nesting_too_deep",
        errors=[FieldError(path="", message=f"{where}nesting deeper than {max_depth} levels")],
    )


def _refuse_nul(value: Any, /) -> None:
    """422 ``nul_character`` if a string of ``value`` (a key too) holds U+0000 (Postgres cannot store it)."""
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise UnprocessableError(
                    "the document contains U+0000",
                    code="nul_character",
                    errors=[FieldError(path="", message=_NUL_MESSAGE)],
                )
        elif isinstance(item, dict):
            mapping: dict[Any, Any] = item  # pyright: ignore[reportUnknownVariableType]
            stack.extend(mapping)
            stack.extend(mapping.values())
        elif isinstance(item, list):
            stack.extend(item)  # pyright: ignore[reportUnknownArgumentType]


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
        detail = f"the request body exceeds {self.max_bytes} bytes"
        # The body is left unread: the connection cannot serve another request.
        await _send_problem(send, 413, code="payload_too_large", detail=detail, close=True)


_URLENCODED = b"application/x-www-form-urlencoded"
_BODILESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class InputGuardMiddleware:
    """Refuses request input that Litestar's decoder or Postgres cannot take, before either sees it.

    - A JSON body nested deeper than ``max_depth``: 422 ``nesting_too_deep``. Litestar decodes a
      handler's ``data`` with a recursive decoder before any handler code could check it: 40 levels
      were accepted and a few thousand ended in a ``RecursionError`` (a 500).
    - U+0000 in a JSON body (``\\u0000``) or a form body (``%00``): 422 ``nul_character``; in the
      path or the query string: 400 ``nul_character``. Postgres stores no NUL in ``text`` or
      ``jsonb``: the statement would fail (a 500) wherever the value is written or compared.

    The body is read here first (it is within ``max_body_bytes``: install this after
    :class:`BodyLimitMiddleware`), scanned without decoding (:func:`check_json_depth`) and handed on
    unchanged. Every body that opens with ``[`` or ``{`` is scanned as JSON whatever its
    ``Content-Type`` says, since the decoder does not look at it either; multipart bodies pass.
    """

    def __init__(self, app: ASGIApp, *, max_depth: int) -> None:
        self.app = app
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"] or b"%00" in scope["query_string"] or b"\x00" in scope["query_string"]:
            await _send_problem(
                send,
                400,
                code="nul_character",
                detail="the path or the query contains U+0000",
                errors=[FieldError(path="", message=_NUL_MESSAGE)],
            )
            return
        media = _body_media(scope)
        if media is None:
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        pending: list[ReceiveMessage] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away mid-body: pass that on
                pending.append(message)
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if not pending and await self._refused(body, media, send):
            return
        whole: HTTPRequestEvent = {"type": "http.request", "body": body, "more_body": bool(pending)}
        pending.insert(0, whole)

        async def replay() -> ReceiveMessage:
            return pending.pop(0) if pending else await receive()

        await self.app(scope, replay, send)

    async def _refused(self, body: bytes, media: bytes, send: Send, /) -> bool:
        if media.startswith(_URLENCODED):
            nul = b"%00" in body or b"\x00" in body
        elif _json_nests_deeper(body, self.max_depth):
            await _send_problem(
                send,
                422,
                code="nesting_too_deep",
                detail=f"the document nests deeper than {self.max_depth} levels",
                errors=[FieldError(path="", message=f"nesting deeper than {self.max_depth} levels")],
            )
            return True
        else:
            nul = _json_has_nul(body)
        if nul:
            await _send_problem(
                send,
                422,
                code="nul_character",
                detail="the body contains U+0000",
                errors=[FieldError(path="", message=_NUL_MESSAGE)],
            )
        return nul


def _body_media(scope: HTTPScope, /) -> bytes | None:
    """The lower-cased Content-Type of a request that may carry a body to check, else None."""
    length: bytes | None = None
    media = b""
    for name, value in scope["headers"]:
        if name == b"content-length":
            length = value
        elif name == b"content-type":
            media = value.lower()
    if media.startswith(b"multipart/"):
        return None
    if length is not None:
        return media if length.strip() != b"0" else None
    return media if scope["method"] not in _BODILESS_METHODS else None


def _json_has_nul(body: bytes, /) -> bool:
    if b"\\u0000" not in body:
        return False
    # In JSON text, \\u0000 is a backslash followed by "u0000": drop escaped backslashes first.
    return b"\\u0000" in body.replace(b"\\\\", b"")


async def _send_problem(
    send: Send,
    status: int,
    /,
    *,
    code: str,
    detail: str,
    errors: list[FieldError] | None = None,
    close: bool = False,
) -> None:
    body = problem_body(status, code=code, detail=detail, errors=errors)
    headers = [
        (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    start: HTTPResponseStartEvent = {"type": "http.response.start", "status": status, "headers": headers}
    await send(start)
    await send({"type": "http.response.body", "body": body, "more_body": False})
