"""Document limits without a stack: the nesting scans that keep deep documents cheap to refuse.

Decisions asserted here (the HTTP side is in test_bad_input):
- The JSON depth scan (run on every request body before Litestar decodes it) agrees with the depth
  of the parsed document: it never refuses valid JSON within the limit, whatever its strings hold.
- YAML nested deeper than the limit is refused with ``nesting_too_deep`` where it crosses the limit
  (PyYAML's scanner is quadratic in the flow level and its composer recursive: a 3 kB body of ``[``
  used to cost ~1.5 s of CPU); YAML up to the limit is accepted.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wf_platform.limits import check_depth, check_json_depth, parse_document
from wf_platform.problems import UnprocessableError


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(
    value=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ ab:,'),
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(st.text(alphabet='[]{}"\\ ab'), children, max_size=3)
        ),
        max_leaves=60,
    ),
    max_depth=st.integers(min_value=1, max_value=8),
)
def test_the_json_depth_scan_agrees_with_the_parsed_depth(value: Any, max_depth: int) -> None:
    def outcome(check: Any, subject: Any) -> str:
        try:
            check(subject, max_depth=max_depth)
        except UnprocessableError as exc:
            return exc.code
        return "accepted"

    expected = outcome(check_depth, value)
    for text in (json.dumps(value), json.dumps(value, indent=1, ensure_ascii=False)):
        assert outcome(check_json_depth, text.encode()) == expected, text


@pytest.mark.parametrize(
    ("body", "where"),
    [
        pytest.param(b"[" * 3_000, "line 1, column 33:", id="flow-sequences"),
        pytest.param(b"{a: " * 3_000, "line 1, column 129:", id="flow-mappings"),
        pytest.param(b"[" * 300_000, "line 1, column 33:", id="flow-sequences-300k"),
        pytest.param(
            "\n".join("  " * i + "a:" for i in range(1_000)).encode() + b" 1",
            "line 33, column 65:",
            id="block-mappings",
        ),
        pytest.param(
            "\n".join("  " * i + "-" for i in range(1_000)).encode() + b" 1",
            "line 33, column 65:",
            id="block-sequences",
        ),
    ],
)
def test_deeply_nested_yaml_is_refused_where_it_crosses_the_limit(body: bytes, where: str) -> None:
    """PyYAML's scanner is quadratic in the flow level and its composer recursive: a 3 kB body of '['
    cost ~1.5 s of CPU. It must be refused at the first level over the limit, unread beyond it."""
    with pytest.raises(UnprocessableError) as raised:
        parse_document(body, content_type="application/yaml", max_depth=32)
    assert raised.value.code == "nesting_too_deep"
    assert raised.value.errors is not None
    assert raised.value.errors[0].message.startswith(where), raised.value.errors[0].message


def test_yaml_up_to_the_limit_is_accepted() -> None:
    flow = b"[" * 32 + b"]" * 32
    block = "\n".join("  " * i + "a:" for i in range(32)).encode() + b" 1"
    mixed = "\n".join("  " * i + "a:" for i in range(16)).encode() + b" " + b"[" * 16 + b"]" * 16
    scalars = b"a: '" + b"[" * 40 + b"'\nb: x " + b"[" * 40 + b'\nc: "' + b"{" * 40 + b'"\n'
    for body in (flow, block, mixed, scalars):
        value, fmt = parse_document(body, content_type="application/yaml", max_depth=32)
        assert fmt == "yaml" and value
