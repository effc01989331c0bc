"""Measure the two CEL libraries on PyPI for the edge conditions of workflow_core.

Run from the workspace root (cel-python is not a project dependency, so add it for this run only):

    uv run --with cel-python python bench/cel_choice.py [--quick]

For each library it compiles a handful of realistic edge conditions and evaluates them against a
realistic workflow context, and prints compile and evaluate cost in µs per operation (the median of
several timed rounds, so one noisy round does not decide). Evaluation includes whatever conversion of
the context data the library needs, because the engine pays it on every evaluation too: `eval/all`
passes the whole context, `eval/used` only the top-level keys the expression reads. When
workflow_core is importable, the chosen wrapper (`workflow_core.expressions`) is measured as well, to
show its own overhead (allow-list check at compile time; variable filtering and result check at
evaluation time).

The results and the decision are recorded in docs/expressions.md.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

# Edge conditions as tenants write them (comparisons, boolean logic, membership, presence tests and
# the comprehension macros over a small list), each with the top-level keys it reads.
EXPRESSIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("amount > 100", ("amount",)),
    ('customer.tier == "gold" && amount >= 50', ("customer", "amount")),
    ('"vip" in tags && has(customer.email)', ("tags", "customer")),
    ("size(items) > 3 && items.all(i, i.qty > 0 && i.price < 1000.0)", ("items",)),
    (
        'items.exists(i, i.sku.startsWith("SKU-9")) || customer.country in ["DE", "FR", "NL"]',
        ("items", "customer"),
    ),
)

# A workflow context of realistic size: the keys a condition reads plus others it does not.
CONTEXT: dict[str, Any] = {
    "amount": 250,
    "approved": True,
    "currency": "EUR",
    "customer": {
        "id": "c-1042",
        "tier": "gold",
        "email": "ada@example.com",
        "country": "NL",
        "since": "2019-04-01",
    },
    "tags": ["new", "vip", "priority"],
    "items": [
        {"sku": f"SKU-{n}", "qty": n % 4 + 1, "price": 9.5 * (n + 1), "gift": n % 3 == 0} for n in range(10)
    ],
    "shipping": {"method": "express", "address": {"city": "Utrecht", "zip": "3511"}},
    "notes": "leave at the door " * 5,
    "history": [{"step": f"s{n}", "at": f"2024-01-0{n + 1}T10:00:00Z"} for n in range(8)],
}


def _out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def _timed(fn: Callable[[], object], *, round_s: float, rounds: int) -> float:
    """Median µs per call of `fn` over `rounds` rounds of about `round_s` seconds each.

    The loop count is calibrated per operation, so a 1 µs evaluation and a 5 ms one are both
    measured over many calls without the slow library taking an hour. Time is the CPU time of this
    thread, so other work on a shared machine distorts the numbers less than wall time would.
    """
    loops = 1
    while True:
        start = time.thread_time()
        for _ in range(loops):
            fn()
        elapsed = time.thread_time() - start
        if elapsed >= round_s / 10:
            break
        loops *= 2
    loops = max(1, round(loops * round_s / elapsed))
    samples: list[float] = []
    for _ in range(rounds):
        start = time.thread_time()
        for _ in range(loops):
            fn()
        samples.append((time.thread_time() - start) / loops * 1e6)
    return statistics.median(samples)


class Candidate:
    """One library under test: how it compiles a source and evaluates a compiled program."""

    def __init__(
        self,
        name: str,
        compile_fn: Callable[[str], Any],
        eval_fn: Callable[[Any, Mapping[str, Any]], Any],
    ) -> None:
        self.name = name
        self.compile = compile_fn
        self.evaluate = eval_fn


def _rust_candidate() -> Candidate | None:
    try:
        import cel  # optional: a missing library is reported, not fatal
    except ImportError:
        return None
    version = importlib.metadata.version("common-expression-language")
    return Candidate(
        f"common-expression-language {version} (Rust)",
        cel.compile,
        lambda program, data: program.execute(dict(data)),
    )


def _python_candidate() -> Candidate | None:
    try:
        import celpy
    except ImportError:
        return None
    version = importlib.metadata.version("cel-python")
    env = celpy.Environment()

    def compile_fn(source: str) -> Any:
        return env.program(env.compile(source))

    def eval_fn(program: Any, data: Mapping[str, Any]) -> Any:
        # cel-python evaluates its own value types; converting the JSON context is part of the cost.
        activation = {key: celpy.json_to_cel(value) for key, value in data.items()}
        return program.evaluate(activation)

    return Candidate(f"cel-python {version} (pure Python)", compile_fn, eval_fn)


def _wrapper_candidate() -> Candidate | None:
    try:
        from workflow_core import expressions
    except ImportError:
        return None

    def compile_fn(source: str) -> Any:
        # Bypass the LRU cache: this row is about the cost of a cold compile.
        return expressions._compile(source, expressions.DEFAULT_LIMITS)

    return Candidate(
        "workflow_core.expressions (wrapper over the chosen library)",
        compile_fn,
        lambda compiled, data: compiled.evaluate(data),
    )


def main() -> None:
    """Run the benchmark and print a table per library."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short rounds, for a smoke run")
    args = parser.parse_args()
    round_s, rounds = (0.02, 3) if args.quick else (0.2, 7)

    _out(f"Python {platform.python_version()} on {platform.machine()} {platform.system()}")
    _out(f"{rounds} rounds of ~{round_s * 1000:g} ms per measurement; median µs/op\n")

    makers = (_rust_candidate, _python_candidate, _wrapper_candidate)
    for make in makers:
        candidate = make()
        if candidate is None:
            _out(f"[skipped] {make.__name__}: library not installed\n")
            continue
        _out(candidate.name)
        _out(f"  {'expression':<86} {'compile':>8} {'eval/all':>9} {'eval/used':>9}  result")
        totals = [0.0, 0.0, 0.0]
        for source, keys in EXPRESSIONS:
            used = {key: CONTEXT[key] for key in keys}
            compiled = candidate.compile(source)
            result = candidate.evaluate(compiled, CONTEXT)
            timings = (
                _timed(lambda k=candidate, s=source: k.compile(s), round_s=round_s, rounds=rounds),
                _timed(
                    lambda k=candidate, c=compiled: k.evaluate(c, CONTEXT), round_s=round_s, rounds=rounds
                ),
                _timed(
                    lambda k=candidate, c=compiled, u=used: k.evaluate(c, u), round_s=round_s, rounds=rounds
                ),
            )
            for index, value in enumerate(timings):
                totals[index] += value
            _out(f"  {source:<86} {timings[0]:>8.1f} {timings[1]:>9.1f} {timings[2]:>9.1f}  {result!r}")
        means = [total / len(EXPRESSIONS) for total in totals]
        _out(f"  {'mean':<86} {means[0]:>8.1f} {means[1]:>9.1f} {means[2]:>9.1f}\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
