"""How the CLI prints: rich for people, raw JSON (``--json``) for scripts, errors on stderr.

Exit codes (scripts rely on them):

| code | meaning |
|---|---|
| 0 | success (``watch``: the instance completed, or reached ``--until``) |
| 1 | the service refused the call, or the instance failed / was cancelled / timed out under ``watch`` |
| 2 | usage error (bad flag, bad ``--input`` JSON, unreadable file) |
| 3 | not found |
| 4 | conflict |
| 5 | validation failed (every field error is printed) |
| 6 | service unavailable (unreachable, 502/503/504) |
"""

from __future__ import annotations

import json
import sys
from collections.abc import Generator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console

from wf_client import Conflict, NotFound, Unavailable, ValidationFailed, WorkflowClientError

__all__ = [
    "EXIT_CONFLICT",
    "EXIT_ERROR",
    "EXIT_NOT_FOUND",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "EXIT_VALIDATION",
    "err",
    "fail",
    "out",
    "parse_json_argument",
    "print_json",
    "service_errors",
]

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_CONFLICT = 4
EXIT_VALIDATION = 5
EXIT_UNAVAILABLE = 6

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(value: Any, /) -> None:
    """Raw JSON on stdout, one document, for scripts (no colours, no wrapping)."""
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def fail(message: str, /, *, code: int = EXIT_ERROR) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code``."""
    err.print(f"[bold red]error:[/] {message}", markup=True)
    raise typer.Exit(code)


def _exit_code(exc: WorkflowClientError) -> int:
    if isinstance(exc, NotFound):
        return EXIT_NOT_FOUND
    if isinstance(exc, Conflict):
        return EXIT_CONFLICT
    if isinstance(exc, ValidationFailed):
        return EXIT_VALIDATION
    if isinstance(exc, Unavailable):
        return EXIT_UNAVAILABLE
    return EXIT_ERROR


@contextmanager
def service_errors() -> Generator[None]:
    """Turn client errors into a message on stderr (detail, then every field error) and an exit code."""
    try:
        yield
    except WorkflowClientError as exc:
        status = f" ({exc.status} {exc.code or exc.title})" if exc.status else ""
        err.print(f"[bold red]error:[/] {exc.detail}{status}", markup=True)
        for problem in exc.errors:
            err.print(f"  {problem.get('path') or '(root)'}: {problem.get('message', '')}", markup=False)
        raise typer.Exit(_exit_code(exc)) from None


def parse_json_argument(value: str | None, /, *, option: str) -> dict[str, Any]:
    """``--input '{"a": 1}'`` or ``--input @file.json`` (``@-`` reads stdin): a JSON object."""
    if value is None or value == "":
        return {}
    try:
        if value.startswith("@"):
            source = value[1:]
            text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
        else:
            text = value
        data = json.loads(text)
    except OSError as exc:
        fail(f"{option}: cannot read {value[1:]}: {exc.strerror or exc}", code=EXIT_USAGE)
    except json.JSONDecodeError as exc:
        fail(f"{option}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}", code=EXIT_USAGE)
    if not isinstance(data, Mapping):
        fail(f"{option}: must be a JSON object", code=EXIT_USAGE)
    return dict(data)  # pyright: ignore[reportUnknownArgumentType]
