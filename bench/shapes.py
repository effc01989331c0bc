"""The workload shapes, as wire definitions (what the registry stores and LocalEngine loads).

Every machine step has step type ``bench.noop``: the workers ack it with an empty output, so the
numbers measure the engine, not the steps.

- W1: one machine step.
- W2: ten sequential machine steps.
- W3: a parallel gateway fans out to ten machine steps, a parallel gateway joins them, then one
  more machine step runs (a gateway needs an outgoing edge, and the step after the join is what
  proves the join happened): eleven machine steps, a critical path of two.
- W4: the human task lifecycle (create, list, claim, complete) with 100,000 open tasks.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CRITICAL_PATH", "MACHINE_SHAPES", "SHAPE_STEPS", "STEP_TYPE", "wire"]

STEP_TYPE = "bench.noop"
MACHINE_SHAPES = ("W1", "W2", "W3")
SHAPE_STEPS = {"W1": 1, "W2": 10, "W3": 11, "W4": 1}
"""Machine steps (W4: human steps) each instance runs."""
CRITICAL_PATH = {"W1": 1, "W2": 10, "W3": 2, "W4": 1}
"""Steps one after the other on the longest path: engine overhead per step divides by this."""


def _machine() -> dict[str, Any]:
    return {"type": "machine", "step_type": STEP_TYPE}


def wire(shape: str, /) -> dict[str, Any]:
    """The shape's definition in the wire format."""
    name = f"bench_{shape.lower()}"
    if shape == "W1":
        return {"name": name, "version": "1.0.0", "steps": {"s0": _machine()}, "edges": []}
    if shape == "W2":
        steps = {f"s{i}": _machine() for i in range(10)}
        edges = [{"source": f"s{i}", "target": f"s{i + 1}"} for i in range(9)]
        return {"name": name, "version": "1.0.0", "steps": steps, "edges": edges}
    if shape == "W3":
        steps: dict[str, Any] = {"fork": {"type": "parallel_gateway"}}
        steps |= {f"b{i}": _machine() for i in range(10)}
        steps["join"] = {"type": "parallel_gateway"}
        steps["after"] = _machine()
        edges = [{"source": "fork", "target": f"b{i}"} for i in range(10)]
        edges += [{"source": f"b{i}", "target": "join"} for i in range(10)]
        edges.append({"source": "join", "target": "after"})
        return {"name": name, "version": "1.0.0", "steps": steps, "edges": edges}
    if shape == "W4":
        return {
            "name": name,
            "version": "1.0.0",
            "steps": {
                "review": {
                    "type": "human",
                    "title": "Review",
                    "candidate_groups": ["reviewers"],
                    "form_schema": {
                        "type": "object",
                        "properties": {"approved": {"type": "boolean"}},
                        "required": ["approved"],
                    },
                }
            },
            "edges": [],
        }
    raise ValueError(f"unknown shape {shape}")
