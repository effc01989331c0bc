"""Edge conditions: CEL expressions compiled once and evaluated against the workflow context.

A condition is a string in the `Common Expression Language <https://cel.dev>`_. It is compiled when a
definition is validated (:func:`compile_expression`, :func:`check_expression`) and evaluated by the
engine against the instance's context data (:meth:`CompiledExpression.evaluate`). Each top-level key
of the context data is a CEL variable::

    amount > 100
    customer.tier == "gold" && amount >= 50.0
    "vip" in tags && has(customer.email)
    size(items) > 3 && items.all(i, i.qty > 0)

The library doing all parsing and evaluation is ``common-expression-language`` (Python bindings to
the Rust ``cel`` crate), chosen by measurement over ``cel-python``; the numbers and the reasons are
in ``docs/expressions.md``. This module adds only what the library does not do:

* **Function allow-list.** The library accepts a call of any name at compile time and fails only
  when it evaluates it. Compilation here rejects every function that is not in
  :data:`ALLOWED_FUNCTIONS` (the CEL standard functions the library implements natively, and the CEL
  operators), so ``foo(1)``, ``os.system("x")`` or ``__import__("os")`` never reach a registry.
  No custom functions are ever registered, so nothing outside CEL's standard library can run.
* **Limits** (:class:`ExpressionLimits`): source length, bracket nesting (checked before the parser
  sees the text), nesting of comprehension macros, and a CPU-time budget per evaluation.
* **Semantics the engine relies on**: a missing variable is an error, not ``false``; the result
  must be a ``bool``; the library's exceptions become :class:`ExpressionEvaluationError`.

Numbers. Context data is JSON: Python ``int`` becomes a CEL ``int`` and ``float`` a CEL ``double``.
CEL compares ``int`` and ``double`` with each other directly (``amount > 100`` holds for 250.5 and
``amount > 100.0`` for 250), so comparisons need no care. Arithmetic does not mix them
(``amount * 1.1`` fails when ``amount`` is an ``int``): write ``double(amount) * 1.1``. No number is
converted here, because any conversion would break the other half of the cases (``items[i]`` needs
an ``int``, ``x / 2`` on a ``double`` needs ``2.0``).

Missing variables. A condition that reads a top-level key the context lacks fails with
:class:`ExpressionEvaluationError` (the engine raises an incident) rather than being silently
false; a typo in a condition would otherwise route every instance down the wrong edge. Optional
data belongs inside an object and is tested with ``has()``: ``has(customer.email)`` is ``false``
when ``customer`` has no ``email``. A key that is present with value ``null`` is tested with
``x == null``.

Errors::

    ExpressionError                  .expression, .reason
    ├── ExpressionCompileError       syntax, unknown function, a limit exceeded
    └── ExpressionEvaluationError    missing variable, type error, over budget, non-bool result
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final


def _load_cel_extension() -> Any:
    """The compiled ``cel`` extension module, without ``cel/__init__``.

    ``import cel`` also imports the package's command-line tool (typer, rich, prompt_toolkit), which
    costs 1-3 s at every start of every process that touches a condition (the CLI, workers, tests).
    Only the extension is needed, so it is loaded on its own (about 20 ms).
    """
    import importlib.machinery
    import importlib.util
    import sys
    from pathlib import Path

    loaded = sys.modules.get("cel")
    if loaded is not None:
        return loaded
    spec = importlib.util.find_spec("cel")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the common-expression-language package is not installed")
    folder = Path(next(iter(spec.submodule_search_locations)))
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = folder / f"cel{suffix}"
        if path.exists():
            loader = importlib.machinery.ExtensionFileLoader("cel.cel", str(path))
            module_spec = importlib.util.spec_from_file_location("cel.cel", path, loader=loader)
            assert module_spec is not None
            module = importlib.util.module_from_spec(module_spec)
            loader.exec_module(module)
            return module
    import cel as package  # an unusual layout: fall back to the package itself

    return package


if TYPE_CHECKING:
    import cel
else:
    cel = _load_cel_extension()

__all__ = [
    "ALLOWED_FUNCTIONS",
    "DEFAULT_LIMITS",
    "CompiledExpression",
    "ExpressionCompileError",
    "ExpressionError",
    "ExpressionEvaluationError",
    "ExpressionLimits",
    "check_expression",
    "compile_expression",
]


class ExpressionError(Exception):
    """Base of every error about an expression.

    Attributes:
        expression: The expression's source text.
        reason: Why it failed, one line, without the source (validation reports show it next to the
            field that holds the expression).
    """

    def __init__(self, expression: str, reason: str) -> None:
        self.expression = expression
        self.reason = reason
        super().__init__(f"{reason} (in expression {_abbreviate(expression)})")


class ExpressionCompileError(ExpressionError):
    """The expression cannot be accepted: bad syntax, a function outside the allow-list, or a limit."""


class ExpressionEvaluationError(ExpressionError):
    """Evaluating a compiled expression failed.

    Missing variable, a type error (e.g. ``"a" > 1``), a missing map key or list index, the time budget
    exceeded, or a result that is not a bool.
    """


@dataclass(frozen=True, slots=True)
class ExpressionLimits:
    """Bounds on what an expression may be and cost. Hashable, so part of the compile cache key."""

    max_length: int = 2048
    """Maximum source length in characters."""

    max_nesting: int = 32
    """Maximum depth of ``(``, ``[`` and ``{``. Checked before parsing: the parser recurses on it."""

    max_comprehension_nesting: int = 2
    """Maximum nesting of the comprehension macros (``all``, ``exists``, ``exists_one``, ``map``,
    ``filter``). Each level multiplies the work by a list's length, and the library cannot interrupt
    an evaluation, so this is the compile-time guard against conditions that would run for minutes."""

    max_eval_ms: float = 50.0
    """CPU-time budget of one evaluation, in milliseconds, including the conversion of the context
    data. The library cannot be interrupted, so the budget is checked after the fact: an evaluation
    that took longer fails with :class:`ExpressionEvaluationError` even if it produced a result.
    Measured with :func:`time.thread_time` (CPU time of the evaluating thread), so a busy machine
    does not fail conditions that are cheap; an evaluation over budget runs once more and fails
    only if that run is over budget too (a garbage collection inside the first one counted as its
    time). Normal conditions take microseconds."""


_cpu_clock = time.thread_time
"""The evaluation budget's clock: CPU seconds of the calling thread (a name of its own for tests)."""

DEFAULT_LIMITS: Final = ExpressionLimits()
"""The limits used when none are given."""

# Names as the library reports them from `Program.functions()`: CEL operators appear as their
# overload identifiers. Macros (`has`, `all`, `exists`, `exists_one`, `map`, `filter`) do not
# appear at all: the parser expands them into operators. Only functions the Rust library implements
# natively are listed, so nothing here can fail as "undefined" at evaluation time. Left out on
# purpose: `bool()` (not implemented by the library), `now()`-like clock reads (not CEL, and the
# engine is deterministic), the optional-value syntax (`x.?y`, not supported by the parser).
_OPERATORS: Final = frozenset(
    {
        "!_",
        "-_",
        "_+_",
        "_-_",
        "_*_",
        "_/_",
        "_%_",
        "_==_",
        "_!=_",
        "_<_",
        "_<=_",
        "_>_",
        "_>=_",
        "_&&_",
        "_||_",
        "_?_:_",
        "_[_]",
        "@in",
        "@not_strictly_false",  # emitted by the expansion of all() / exists()
    }
)
_STANDARD_FUNCTIONS: Final = frozenset(
    {
        # size and type conversions
        "size",
        "int",
        "uint",
        "double",
        "string",
        "bytes",
        "duration",
        "timestamp",
        "type",
        "dyn",
        # strings
        "contains",
        "startsWith",
        "endsWith",
        "matches",
        # timestamp and duration accessors (UTC; the time-zone argument is not supported)
        "getFullYear",
        "getMonth",
        "getDayOfYear",
        "getDayOfMonth",
        "getDate",
        "getDayOfWeek",
        "getHours",
        "getMinutes",
        "getSeconds",
        "getMilliseconds",
    }
)
ALLOWED_FUNCTIONS: Final[frozenset[str]] = _OPERATORS | _STANDARD_FUNCTIONS
"""Every function or operator an expression may call, as the library names them."""

# A well-formed macro call is expanded by the parser and leaves no trace among the functions; a
# macro name that does show up was called with the wrong arguments (`items.all(x)`).
_MACROS: Final = frozenset({"has", "all", "exists", "exists_one", "map", "filter"})
_COMPREHENSIONS: Final = frozenset({"all", "exists", "exists_one", "map", "filter"})

_PARSE_ERROR = re.compile(r"ERROR: <input>:(\d+):(\d+): (.*)")
_PARSE_ERROR_DETAIL = re.compile(r'msg: "([^"]*)"')
_UNDEFINED = re.compile(r"Undefined variable or function: '([^']*)'")

_CACHE_SIZE: Final = 1024


class CompiledExpression:
    """A compiled, checked condition. Immutable and reusable; get one from :func:`compile_expression`.

    The library's compiled program is immutable and evaluates safely from several threads at once
    (tested), so one instance may be shared between threads.
    """

    __slots__ = ("_limits", "_program", "_source", "_variables")

    def __init__(self, source: str, program: cel.Program, limits: ExpressionLimits) -> None:
        self._source = source
        self._program = program
        self._limits = limits
        # Names the expression reads. Comprehension variables (the `i` of `items.all(i, ...)`) and
        # type names (`int`) are included too: harmless, since only names present in the data are
        # passed on.
        self._variables: tuple[str, ...] = tuple(program.variables())

    @property
    def source(self) -> str:
        """The expression's source text."""
        return self._source

    @property
    def limits(self) -> ExpressionLimits:
        """The limits it was compiled with, which also bound its evaluation."""
        return self._limits

    @property
    def variables(self) -> frozenset[str]:
        """Identifiers the expression reads (top-level context keys, plus comprehension variables)."""
        return frozenset(self._variables)

    def evaluate(self, data: Mapping[str, Any]) -> bool:
        """Evaluate the condition against the workflow context data.

        Args:
            data: The context data, a JSON object; each top-level key is a variable.

        Returns:
            The condition's value.

        Raises:
            ExpressionEvaluationError: A variable is missing, an operation does not apply to its
                operands, the result is not a bool, or the evaluation ran over
                :attr:`ExpressionLimits.max_eval_ms`.
        """
        # Converting Python values into CEL values is most of the cost (microseconds per string or
        # map entry), so only the keys the expression reads are handed over.
        variables = {name: data[name] for name in self._variables if name in data}
        result, failure, elapsed_ms = self._timed(variables)
        if elapsed_ms > self._limits.max_eval_ms:
            # Over budget once may be the process, not the condition: a full garbage collection
            # or a lazy first-use initialisation inside the call counts as its CPU time. The
            # evaluation is pure, so it runs again; only a second run over budget fails it.
            result, failure, elapsed_ms = self._timed(variables)
        if elapsed_ms > self._limits.max_eval_ms:
            raise ExpressionEvaluationError(
                self._source,
                f"evaluation took {elapsed_ms:.1f} ms of CPU time, over the budget of "
                f"{self._limits.max_eval_ms:g} ms",
            ) from failure
        if failure is not None:
            raise ExpressionEvaluationError(self._source, _runtime_reason(failure)) from failure
        if not isinstance(result, bool):
            raise ExpressionEvaluationError(
                self._source, f"a condition must evaluate to a bool, not {_cel_type_name(result)}"
            )
        return result

    def _timed(self, variables: dict[str, Any], /) -> tuple[object, Exception | None, float]:
        """One run of the program: its result or failure, and the CPU milliseconds it took."""
        started = _cpu_clock()
        try:
            result = self._program.execute(variables)
        except Exception as exc:  # the library reports runtime errors with assorted builtin types
            return None, exc, (_cpu_clock() - started) * 1000.0
        return result, None, (_cpu_clock() - started) * 1000.0

    def __repr__(self) -> str:
        return f"CompiledExpression({self._source!r})"


def compile_expression(source: str, /, *, limits: ExpressionLimits = DEFAULT_LIMITS) -> CompiledExpression:
    """Compile and check a condition, or return the cached result of an earlier compilation.

    Args:
        source: The CEL source text.
        limits: Bounds on the expression; part of the cache key.

    Returns:
        The compiled expression; the same object for the same source and limits while it stays in
        the cache (the most recent 1024 are kept).

    Raises:
        ExpressionCompileError: A syntax error, a call of a function outside
            :data:`ALLOWED_FUNCTIONS`, a misused macro, a message literal, or a limit exceeded.
    """
    return _compile_cached(source, limits)


def check_expression(source: str, /, *, limits: ExpressionLimits = DEFAULT_LIMITS) -> str | None:
    """Check a condition for a validation report.

    Args:
        source: The CEL source text.
        limits: Bounds on the expression.

    Returns:
        ``None`` if the expression compiles, else a one-line reason.
    """
    try:
        compile_expression(source, limits=limits)
    except ExpressionCompileError as exc:
        return exc.reason
    return None


def _compile(source: str, limits: ExpressionLimits) -> CompiledExpression:
    if not source.strip():
        raise ExpressionCompileError(source, "the expression is empty")
    if len(source) > limits.max_length:
        raise ExpressionCompileError(
            source, f"the expression is {len(source)} characters long, over the limit of {limits.max_length}"
        )
    shape = _scan(source)
    # Before parsing: the parser recurses once per bracket level.
    if shape.bracket_depth > limits.max_nesting:
        raise ExpressionCompileError(
            source, f"brackets are nested {shape.bracket_depth} deep, over the limit of {limits.max_nesting}"
        )
    try:
        program = cel.compile(source)
    except Exception as exc:  # the library raises ValueError today; any failure means "not valid"
        raise ExpressionCompileError(source, _parse_reason(source, exc)) from exc

    functions = program.functions()
    misused = sorted(name for name in functions if name in _MACROS)
    if misused:
        raise ExpressionCompileError(
            source, f"wrong arguments to the macro {misused[0]}() (e.g. items.{misused[0]}(x, x > 0))"
        )
    unknown = sorted(name for name in functions if name not in ALLOWED_FUNCTIONS)
    if unknown:
        names = ", ".join(f"{name}()" for name in unknown)
        raise ExpressionCompileError(
            source, f"unknown function {names}: only standard CEL functions are allowed"
        )
    if shape.comprehension_depth > limits.max_comprehension_nesting:
        raise ExpressionCompileError(
            source,
            f"comprehension macros are nested {shape.comprehension_depth} deep, over the limit of "
            f"{limits.max_comprehension_nesting}",
        )
    if shape.message_literal:
        # `Foo{a: 1}` parses but the library evaluates it only to fail: there are no message types.
        raise ExpressionCompileError(source, "message construction (Type{field: value}) is not supported")
    return CompiledExpression(source, program, limits)


_compile_cached = functools.lru_cache(maxsize=_CACHE_SIZE)(_compile)


@dataclass(frozen=True, slots=True)
class _Shape:
    bracket_depth: int
    comprehension_depth: int
    message_literal: bool


_STRING_PREFIXES: Final = frozenset({"r", "b", "rb", "br"})
_LITERAL: Final = "'lit'"  # not an identifier, so never taken for a macro name or a message type


def _scan(source: str) -> _Shape:
    """Measure bracket and comprehension nesting with a lexical pass over the source.

    This is not a parser and decides nothing about meaning: it skips string literals and comments
    (so brackets inside them do not count) and tracks which open parenthesis belongs to a
    ``.all(``/``.exists(``/... call. On malformed input its numbers may be off; the parser then
    rejects the source anyway.
    """
    stack: list[bool] = []  # one entry per open bracket: does it open a comprehension's arguments?
    comprehensions = max_brackets = max_comprehensions = 0
    message_literal = False
    # The last two significant lexemes: identifiers and punctuation as themselves, every literal as
    # the placeholder "lit" (never an identifier-like lexeme that could be mistaken for a macro name).
    previous = before_previous = ""
    index, end = 0, len(source)
    while index < end:
        char = source[index]
        if char.isspace():
            index += 1
            continue
        if source.startswith("//", index):
            newline = source.find("\n", index)
            index = end if newline < 0 else newline + 1
            continue
        lexeme = char
        if char.isidentifier():
            stop = index + 1
            while stop < end and (source[stop].isalnum() or source[stop] == "_"):
                stop += 1
            lexeme = source[index:stop]
            index = stop
            if index < end and source[index] in "\"'" and lexeme.lower() in _STRING_PREFIXES:
                index = _skip_string(source, index, raw="r" in lexeme.lower())
                lexeme = _LITERAL
        elif char.isdigit():
            stop = index + 1
            while stop < end and (source[stop].isalnum() or source[stop] == "."):
                stop += 1
            index = stop
            lexeme = _LITERAL
        elif char in "\"'":
            index = _skip_string(source, index, raw=False)
            lexeme = _LITERAL
        else:
            index += 1
            if char in "([{":
                opens_comprehension = char == "(" and previous in _COMPREHENSIONS and before_previous == "."
                if char == "{" and previous.isidentifier() and previous != "in":
                    message_literal = True
                stack.append(opens_comprehension)
                comprehensions += opens_comprehension
                max_brackets = max(max_brackets, len(stack))
                max_comprehensions = max(max_comprehensions, comprehensions)
            elif char in ")]}" and stack:
                comprehensions -= stack.pop()
        before_previous, previous = previous, lexeme
    return _Shape(max_brackets, max_comprehensions, message_literal)


def _skip_string(source: str, start: int, *, raw: bool) -> int:
    """Index just past the string literal that opens at `start` (CEL's four quote styles)."""
    quote = source[start]
    delimiter = quote * 3 if source.startswith(quote * 3, start) else quote
    index, end = start + len(delimiter), len(source)
    while index < end:
        if not raw and source[index] == "\\":
            index += 2
        elif source.startswith(delimiter, index):
            return index + len(delimiter)
        elif len(delimiter) == 1 and source[index] == "\n":
            return index  # unterminated: the parser will say so
        else:
            index += 1
    return end


def _parse_reason(source: str, exc: Exception) -> str:
    message = str(exc)
    # The library repeats the source first; drop it so that a source containing "ERROR:" cannot
    # be mistaken for the diagnostics.
    prefix = f"Failed to parse expression '{source}': "
    if message.startswith(prefix):
        message = message[len(prefix) :]
    found = _PARSE_ERROR.search(message)
    if found is None:
        return f"invalid expression: {message.splitlines()[0] if message else type(exc).__name__}"
    line, column, detail = found.groups()
    nested = _PARSE_ERROR_DETAIL.search(detail)
    if nested is not None:
        detail = nested.group(1)
    detail = detail.removeprefix("Syntax error: ")
    return f"syntax error at line {line}, column {column}: {detail}"


def _runtime_reason(exc: Exception) -> str:
    message = str(exc)
    undefined = _UNDEFINED.search(message)
    if undefined is not None:
        name = undefined.group(1)
        # Functions were checked at compile time, so an undefined function name means that no
        # overload takes these argument types (e.g. int(timestamp)).
        if name in ALLOWED_FUNCTIONS:
            return f"{name}() does not accept arguments of these types"
        return f"undefined variable '{name}' (not in the context data)"
    if isinstance(exc, KeyError):
        return f"no such key: {message}"
    if message.startswith("No such overload"):
        return (
            "no operator or function for these operand types (CEL does not mix int and double in "
            "arithmetic: convert with double(x) or int(x))"
        )
    first = message.splitlines()[0] if message else type(exc).__name__
    return first[0].lower() + first[1:] if first else first


def _cel_type_name(value: object) -> str:
    names: dict[type, str] = {
        int: "int",
        float: "double",
        str: "string",
        bytes: "bytes",
        list: "list",
        dict: "map",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)


def _abbreviate(source: str, limit: int = 120) -> str:
    return repr(source if len(source) <= limit else source[: limit - 3] + "...")
