"""Summarize a py-spy ``--format raw`` (collapsed stacks) file: inclusive share of each function."""

from __future__ import annotations

import collections
import re
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::\d+)?\)$")


def summarize(
    path: Path,
    *,
    limit: int = 25,
    only: tuple[str, ...] = (
        "orchestrator",
        "wf_platform",
        "workflow_core",
        "sqlalchemy",
        "asyncpg",
        "nats",
        "httpx",
        "litestar",
        "opentelemetry",
        "msgspec",
    ),
) -> list[dict[str, object]]:
    total = 0
    inclusive: collections.Counter[str] = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        seen: set[str] = set()
        for frame in stack.split(";"):
            match = _FRAME.match(frame)
            if match is None:
                continue
            file = match["file"]
            parts = file.split("/")
            package = next((p for p in only if p in parts), None)
            if package is None:
                continue
            key = f"{package}: {match['func']} ({Path(file).name})"
            if key not in seen:
                seen.add(key)
                inclusive[key] += n
    return [{"function": k, "share": round(v / total, 3)} for k, v in inclusive.most_common(limit)] + [
        {"function": "samples", "share": total}
    ]
