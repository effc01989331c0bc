"""Edge conditions in CEL: what compiles, what it evaluates to, and what is refused."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workflow_core import expressions
from workflow_core.expressions import (
    ALLOWED_FUNCTIONS,
    DEFAULT_LIMITS,
    CompiledExpression,
    ExpressionCompileError,
    ExpressionError,
    ExpressionEvaluationError,
    ExpressionLimits,
    check_expression,
    compile_expression,
)

ORDER: dict[str, Any] = {
    "amount": 250,
    "approved": True,
    "currency": "EUR",
    "discount": 12.5,
    "customer": {"id": "c-1", "tier": "gold", "email": "ada@example.com", "address": {"country": "NL"}},
    "tags": ["new", "vip"],
    "items": [
        {"sku": "SKU-1", "qty": 2, "price": 10.0},
        {"sku": "SKU-2", "qty": 1, "price": 99.5},
        {"sku": "SKU-9", "qty": 5, "price": 3.25},
        {"sku": "SKU-4", "qty": 1, "price": 1.0},
    ],
    "scores": {"risk": 0.2, "fraud": 0.01},
    "note": None,
    "due": "2025-03-01T12:00:00Z",
}


def holds(source: str, data: dict[str, Any] | None = None) -> bool:
    return compile_expression(source).evaluate(ORDER if data is None else data)


# -- evaluation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("amount > 100", True),
        ("amount > 1000", False),
        ("approved == true", True),
        ("!approved", False),
        ('customer.tier == "gold" && amount >= 50.0', True),
        ('customer.tier == "silver" || amount < 100', False),
        ('customer.address.country in ["DE", "FR", "NL"]', True),
        ('currency != "USD" ? amount > 200 : amount > 300', True),
    ],
)
def test_comparisons_and_logic(source: str, expected: bool) -> None:
    assert holds(source) is expected


@pytest.mark.parametrize(
    ("source", "data", "expected"),
    [
        # The two cases users write without thinking about CEL's int/double types.
        ("amount > 100", {"amount": 250.5}, True),
        ("amount > 100.0", {"amount": 250}, True),
        ("amount > 100", {"amount": 99.99}, False),
        ("amount == 100", {"amount": 100.0}, True),
        ("amount == 100.0", {"amount": 100}, True),
        ("amount >= 100.5", {"amount": 100}, False),
        ("amount < limit", {"amount": 3, "limit": 3.5}, True),
        ("double(amount) * 1.1 > 110.0", {"amount": 101}, True),
        ("amount * 2 > 100", {"amount": 60}, True),
        ("amount / 2.0 > 100.0", {"amount": 250.0}, True),
    ],
)
def test_int_and_double_mix_in_comparisons(source: str, data: dict[str, Any], expected: bool) -> None:
    assert holds(source, data) is expected


def test_arithmetic_does_not_mix_int_and_double() -> None:
    # Documented: comparisons mix, arithmetic needs double(x). The error says how to fix it.
    with pytest.raises(ExpressionEvaluationError, match=r"double\(x\)"):
        holds("amount * 1.1 > 100.0", {"amount": 100})


@given(
    x=st.one_of(st.integers(-(2**53), 2**53), st.floats(allow_nan=False, allow_infinity=False)),
    y=st.one_of(st.integers(-(2**53), 2**53), st.floats(allow_nan=False, allow_infinity=False)),
)
def test_numeric_comparisons_agree_with_python(x: float, y: float) -> None:
    # Integers within ±2**53 convert to double exactly, the range where CEL and Python agree.
    data = {"x": x, "y": y}
    assert holds("x > y", data) is (x > y)
    assert holds("x <= y", data) is (x <= y)
    assert holds("x == y", data) is (x == y)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('customer.email.endsWith("@example.com")', True),
        ('customer.email.startsWith("ada")', True),
        ('customer.email.contains("@")', True),
        ("customer.email.matches('^[a-z]+@[a-z.]+$')", True),
        ("size(customer.id) == 3", True),
        ('currency + "-" + customer.tier == "EUR-gold"', True),
        ('string(amount) == "250"', True),
        ('int("42") == 42', True),
    ],
)
def test_strings(source: str, expected: bool) -> None:
    assert holds(source) is expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('"vip" in tags', True),
        ('"blocked" in tags', False),
        ("size(items) > 3", True),
        ("items.size() == 4", True),
        ("items[0].qty == 2", True),
        ("items.all(i, i.qty > 0)", True),
        ("items.exists(i, i.price > 50.0)", True),
        ("items.exists_one(i, i.qty == 5)", True),
        ('items.filter(i, i.sku.startsWith("SKU-")).size() == 4', True),
        ("items.map(i, i.qty).exists(q, q >= 5)", True),
        ("items.map(i, i.qty > 1, i.sku) == ['SKU-1', 'SKU-9']", True),
        ("tags.all(t, t.size() > 2)", True),
        ("has(customer.email) && !has(customer.phone)", True),
        ("has(scores.risk) && scores.risk < 0.5", True),
        ('"fraud" in scores', True),
        ('scores["fraud"] < 0.05', True),
        ("scores.exists(k, k == 'risk')", True),
        ("note == null", True),
        ("customer.address.country == 'NL'", True),
        ('timestamp(due) < timestamp("2026-01-01T00:00:00Z")', True),
        ('timestamp(due) + duration("48h") > timestamp("2025-03-03T00:00:00Z")', True),
        ("timestamp(due).getFullYear() == 2025", True),
        ("type(amount) == int && type(discount) == double", True),
    ],
)
def test_lists_maps_membership_presence_and_macros(source: str, expected: bool) -> None:
    assert holds(source) is expected


def test_has_is_false_for_a_missing_field_and_true_for_a_null_one() -> None:
    assert holds("has(customer.phone)") is False
    assert holds("has(c.phone)", {"c": {"phone": None}}) is True


def test_compiled_expression_is_reusable_over_many_contexts() -> None:
    compiled = compile_expression("amount > 100 && approved")
    results = [compiled.evaluate({"amount": n, "approved": n % 2 == 0}) for n in range(95, 105)]
    assert results == [n > 100 and n % 2 == 0 for n in range(95, 105)]
    assert compiled.source == "amount > 100 && approved"
    assert compiled.limits is DEFAULT_LIMITS
    assert {"amount", "approved"} <= compiled.variables


def test_unreferenced_context_values_are_never_converted() -> None:
    # Only keys the expression reads are handed to the library: a value CEL cannot represent, or a
    # huge one, elsewhere in the context costs nothing and breaks nothing.
    data = {"amount": 150, "blob": object(), "big": list(range(100_000))}
    assert holds("amount > 100", data) is True


def test_evaluation_from_several_threads() -> None:
    compiled = compile_expression("items.exists(i, i.qty == n)")
    results: dict[int, bool] = {}

    def work(n: int) -> None:
        results[n] = compiled.evaluate({"items": ORDER["items"], "n": n})

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {n: n in {1, 2, 5} for n in range(8)}


# -- evaluation errors ---------------------------------------------------------------------------


def test_a_missing_variable_is_an_error_not_false() -> None:
    with pytest.raises(ExpressionEvaluationError) as caught:
        holds("amount > 100", {"approved": True})
    assert caught.value.reason == "undefined variable 'amount' (not in the context data)"
    assert caught.value.expression == "amount > 100"


def test_a_missing_field_is_an_error_unless_tested_with_has() -> None:
    with pytest.raises(ExpressionEvaluationError, match="no such key: 'phone'"):
        holds('customer.phone == "123"')
    assert holds('has(customer.phone) && customer.phone == "123"') is False


def test_short_circuit_skips_the_missing_variable() -> None:
    assert holds("approved || missing > 1", {"approved": True}) is True


@pytest.mark.parametrize(
    ("source", "data", "reason"),
    [
        ("amount", {"amount": 1}, "a condition must evaluate to a bool, not int"),
        ("customer.tier", ORDER, "a condition must evaluate to a bool, not string"),
        ("tags", ORDER, "a condition must evaluate to a bool, not list"),
        ("note", ORDER, "a condition must evaluate to a bool, not null"),
        ("1 / zero > 0", {"zero": 0}, "division by zero"),
        ("items[10].qty > 0", ORDER, "index out of bounds"),
        ("customer.tier > 1", ORDER, "no operator or function for these operand types"),
        ("int(customer) > 1", ORDER, "int() does not accept arguments of these types"),
        ("amount + 1 > 0", {"amount": 2**63 - 1}, "overflow"),
    ],
)
def test_runtime_errors(source: str, data: dict[str, Any], reason: str) -> None:
    with pytest.raises(ExpressionEvaluationError) as caught:
        holds(source, data)
    assert reason in caught.value.reason
    assert isinstance(caught.value, ExpressionError)


def test_evaluation_over_budget_is_an_error() -> None:
    # The library cannot be interrupted, so the budget is checked once the evaluation returns: a
    # comprehension nested twice over a 600-element list (360,000 steps) runs far over 1 ms.
    limits = ExpressionLimits(max_eval_ms=1.0)
    compiled = compile_expression("xs.all(a, xs.all(b, a + b >= 0))", limits=limits)
    with pytest.raises(ExpressionEvaluationError, match=r"over the budget of 1 ms"):
        compiled.evaluate({"xs": list(range(600))})
    assert compiled.evaluate({"xs": [1, 2]}) is True


def test_one_slow_run_is_not_the_condition_s_fault(monkeypatch: pytest.MonkeyPatch) -> None:
    # A full garbage collection (or a lazy first-use initialisation) inside an evaluation counts as
    # its CPU time: a cheap condition once over budget is evaluated again, and only fails if that
    # run is over budget too. The evaluating thread's clock is faked: 80 ms, then 0.1 ms per run.
    compiled = compile_expression("amount > 100", limits=ExpressionLimits(max_eval_ms=50.0))
    runs = iter([0.0, 0.080, 1.0, 1.0001, 2.0, 2.080, 3.0, 3.080])
    monkeypatch.setattr(expressions, "_cpu_clock", lambda: next(runs))
    assert compiled.evaluate({"amount": 150}) is True  # 80 ms, then 0.1 ms: passes
    with pytest.raises(ExpressionEvaluationError, match=r"took 80.0 ms of CPU time"):
        compiled.evaluate({"amount": 150})  # 80 ms twice: over budget


def test_the_default_budget_leaves_room_for_realistic_conditions() -> None:
    compiled = compile_expression("items.all(i, items.exists(j, j.sku == i.sku))")
    assert compiled.evaluate({"items": [{"sku": f"S{n}"} for n in range(100)]}) is True


# -- compile-time rejection ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "amount >",
        "amount > > 1",
        "(amount > 1",
        "().__class__",
        "lambda: 1",
        "amount = 1",
        "import os",
        "'unterminated",
        "a.?b",
    ],
)
def test_syntax_errors_are_rejected(source: str) -> None:
    with pytest.raises(ExpressionCompileError) as caught:
        compile_expression(source)
    assert caught.value.reason.startswith("syntax error at line 1, column ")
    assert "\n" not in caught.value.reason


@pytest.mark.parametrize(
    ("source", "names"),
    [
        ("__import__('os').system('x')", "__import__(), system()"),
        ('os.system("x")', "system()"),
        ("foo(1)", "foo()"),
        ("amount > 1 && exec('x')", "exec()"),
        ("eval('1') == 1", "eval()"),
        ("now() > 0", "now()"),
        ("bool('true')", "bool()"),
        ("optional.of(1) == 1", "of()"),
        ("tags.join(',') == ''", "join()"),
        ("max(1, 2) == 2", "max()"),
        ("cel.bind(x, 1, x > 0)", "bind()"),
    ],
)
def test_unknown_functions_are_rejected_at_compile_time(source: str, names: str) -> None:
    with pytest.raises(ExpressionCompileError) as caught:
        compile_expression(source)
    assert caught.value.reason == f"unknown function {names}: only standard CEL functions are allowed"


def test_rejected_even_when_the_context_would_have_the_name() -> None:
    # Without the allow-list the library would look `foo` up in the data at evaluation time.
    assert check_expression("foo(1)") is not None


@pytest.mark.parametrize(
    "source", ["items.all(i)", "items.map(i)", "all(items, i, i > 0)", "items.filter(i)"]
)
def test_misused_macros_are_rejected(source: str) -> None:
    with pytest.raises(ExpressionCompileError, match=r"wrong arguments to the macro"):
        compile_expression(source)


def test_message_construction_is_rejected() -> None:
    with pytest.raises(ExpressionCompileError, match="message construction"):
        compile_expression("google.protobuf.Int64Value{value: 1} == 1")
    assert check_expression('"a" in {"a": 1}') is None  # a map literal after `in` is fine


def test_every_allowed_standard_function_compiles() -> None:
    calls = {
        "size": "size(tags) > 0",
        "int": "int(discount) == 12",
        "uint": "uint(amount) > 0u",
        "double": "double(amount) > 0.0",
        "string": "string(amount) != ''",
        "bytes": "bytes(currency) == b'EUR'",
        "duration": "duration('1h') > duration('1m')",
        "timestamp": "timestamp(due) > timestamp('2000-01-01T00:00:00Z')",
        "type": "type(amount) == int",
        "dyn": "dyn(amount) == 250",
        "contains": "currency.contains('E')",
        "startsWith": "currency.startsWith('E')",
        "endsWith": "currency.endsWith('R')",
        "matches": "currency.matches('^E')",
        "getFullYear": "timestamp(due).getFullYear() == 2025",
        "getMonth": "timestamp(due).getMonth() == 2",
        "getDayOfYear": "timestamp(due).getDayOfYear() == 59",
        "getDayOfMonth": "timestamp(due).getDayOfMonth() == 0",
        "getDate": "timestamp(due).getDate() == 1",
        "getDayOfWeek": "timestamp(due).getDayOfWeek() == 6",
        "getHours": "duration('2h').getHours() == 2",
        "getMinutes": "duration('2h').getMinutes() == 120",
        "getSeconds": "timestamp(due).getSeconds() == 0",
        "getMilliseconds": "timestamp(due).getMilliseconds() == 0",
    }
    named = {name for name in ALLOWED_FUNCTIONS if name[0].isalpha()}
    assert named == set(calls)
    for source in calls.values():
        assert holds(source) is True, source


# -- limits ----------------------------------------------------------------------------------------


def test_length_limit() -> None:
    source = "amount > 1 && " * 146 + "true"  # 2048 characters
    assert len(source) == DEFAULT_LIMITS.max_length
    assert check_expression(source) is None
    reason = check_expression(source + " ")
    assert reason == "the expression is 2049 characters long, over the limit of 2048"
    assert check_expression("amount > 100", limits=ExpressionLimits(max_length=5)) is not None


def test_nesting_limit() -> None:
    assert check_expression("(" * 32 + "true" + ")" * 32) is None
    assert (
        check_expression("(" * 33 + "true" + ")" * 33) == "brackets are nested 33 deep, over the limit of 32"
    )
    assert check_expression("[" * 33 + "1" + "]" * 33 + " == []") is not None
    # Far past what the parser itself could take: refused before it is parsed.
    assert (
        check_expression("(" * 1000 + "1" + ")" * 1000, limits=ExpressionLimits(max_length=5000)) is not None
    )


def test_nesting_ignores_brackets_in_strings_and_comments() -> None:
    assert check_expression('note == "' + "(" * 40 + '"') is None
    assert check_expression("r'" + "[" * 40 + "' != ''") is None
    assert check_expression("'''" + "{" * 40 + "''' != '' // " + "(" * 40) is None
    assert check_expression('"\\"' + "(" * 40 + '" != ""') is None


def test_comprehension_nesting_limit() -> None:
    assert check_expression("items.exists(i, tags.exists(t, t == i.sku))") is None
    reason = check_expression("items.all(a, items.all(b, items.all(c, true)))")
    assert reason == "comprehension macros are nested 3 deep, over the limit of 2"
    looser = ExpressionLimits(max_comprehension_nesting=3)
    assert check_expression("items.all(a, items.all(b, items.all(c, true)))", limits=looser) is None
    # Side by side is not nested; a macro name inside a string is not a macro.
    assert check_expression("items.all(a, true) && items.all(b, true) && items.all(c, true)") is None
    assert check_expression('items.all(a, items.all(b, "x.all(y, y)" != ""))') is None


def test_limits_are_a_frozen_value() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_LIMITS.max_length = 1  # type: ignore[misc]
    assert ExpressionLimits() == DEFAULT_LIMITS


# -- check_expression and the cache ----------------------------------------------------------------


def test_check_expression_returns_none_or_one_line() -> None:
    assert check_expression("amount > 100") is None
    for bad in ["amount >", "foo(1)", "", "   ", "(" * 40 + "1" + ")" * 40]:
        reason = check_expression(bad)
        assert reason is not None
        assert "\n" not in reason


def test_empty_expression() -> None:
    assert check_expression("  ") == "the expression is empty"


def test_error_messages_carry_the_expression() -> None:
    with pytest.raises(ExpressionCompileError) as caught:
        compile_expression("foo(1)")
    assert caught.value.expression == "foo(1)"
    assert str(caught.value) == (
        "unknown function foo(): only standard CEL functions are allowed (in expression 'foo(1)')"
    )


def test_the_cache_returns_the_same_compiled_object() -> None:
    first = compile_expression("amount > 12345")
    assert compile_expression("amount > 12345") is first
    assert isinstance(first, CompiledExpression)
    other_limits = compile_expression("amount > 12345", limits=ExpressionLimits(max_eval_ms=10.0))
    assert other_limits is not first
    assert other_limits.limits.max_eval_ms == 10.0


def test_compile_errors_are_raised_every_time() -> None:
    for _ in range(2):
        with pytest.raises(ExpressionCompileError):
            compile_expression("foo(2)")
