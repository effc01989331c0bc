"""W1-W3 on the published ``litestar-workflows`` package's ``LocalExecutionEngine`` (in process).

Runs in the comparison environment (``bench/.venv-compare``; the package is never added to the
project's lock):

    bench/.venv-compare/bin/python -m bench.litestar_engine --shapes W1,W2,W3 --out FILE

Same shapes and no-op steps as :mod:`bench.local_engine`. The package has no gateways in its
engine's parallel path, so W3 is "fork" (a no-op step) → ten branches → "after"; its engine runs
the ten branches in parallel and then marks the instance completed without ever running "after"
(it never joins): the result records that as ``correct: false``. Completion is awaited on the
engine's own per-instance asyncio task (``engine._running[id]``), which ends with the instance.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
from typing import Any

from litestar_workflows import (
    BaseMachineStep,
    Edge,
    LocalExecutionEngine,
    WorkflowDefinition,
    WorkflowRegistry,
)
from litestar_workflows.core.types import WorkflowStatus

from bench.common import RssTrack, closed_loop, make_result
from bench.shapes import CRITICAL_PATH, SHAPE_STEPS


class Noop(BaseMachineStep):
    async def execute(self, context: Any) -> None:
        return None


def definition(shape: str) -> WorkflowDefinition:
    if shape == "W1":
        steps = {"s0": Noop("s0")}
        return WorkflowDefinition(
            name="bench_w1", version="1.0.0", description="", steps=steps, edges=[],
            initial_step="s0", terminal_steps={"s0"},
        )  # fmt: skip
    if shape == "W2":
        steps = {f"s{i}": Noop(f"s{i}") for i in range(10)}
        edges = [Edge(source=f"s{i}", target=f"s{i + 1}") for i in range(9)]
        return WorkflowDefinition(
            name="bench_w2", version="1.0.0", description="", steps=steps, edges=edges,
            initial_step="s0", terminal_steps={"s9"},
        )  # fmt: skip
    if shape == "W3":
        names = ["fork", *(f"b{i}" for i in range(10)), "after"]
        steps = {n: Noop(n) for n in names}
        edges = [Edge(source="fork", target=f"b{i}") for i in range(10)]
        edges += [Edge(source=f"b{i}", target="after") for i in range(10)]
        return WorkflowDefinition(
            name="bench_w3", version="1.0.0", description="", steps=steps, edges=edges,
            initial_step="fork", terminal_steps={"after"},
        )  # fmt: skip
    raise ValueError(shape)


def workflow_class(shape: str) -> type:
    built = definition(shape)

    class Workflow:
        @classmethod
        def get_definition(cls) -> WorkflowDefinition:
            return built

    return Workflow


async def run_one(engine: LocalExecutionEngine, workflow: type) -> bool:
    instance = await engine.start_workflow(workflow)
    task = engine._running.get(instance.id)
    if task is not None:
        await task
    return instance.status == WorkflowStatus.COMPLETED


def executed(instance: Any) -> list[str]:
    return [e.step_name for e in instance.context.step_history if str(e.status).lower().endswith("succeeded")]


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    import psutil

    proc = psutil.Process()
    results: list[dict[str, Any]] = []
    for shape in args.shapes.split(","):
        registry = WorkflowRegistry()
        workflow = workflow_class(shape)
        registry.register(workflow)
        engine = LocalExecutionEngine(registry)

        def one(engine: LocalExecutionEngine = engine, workflow: type = workflow) -> Any:
            return run_one(engine, workflow)

        await closed_loop(one, clients=args.clients, duration=args.warmup)
        cpu0 = proc.cpu_times()
        began = time.perf_counter()
        latencies, failed, errors = await closed_loop(one, clients=args.clients, duration=args.duration)
        wall = time.perf_counter() - began
        cpu1 = proc.cpu_times()
        check = await engine.start_workflow(workflow)
        pending = engine._running.get(check.id)
        if pending is not None:
            await pending
        ran = executed(check)
        last = {"W1": "s0", "W2": "s9", "W3": "after"}[shape]
        result = make_result(
            system="litestar-workflows",
            shape=shape,
            phase="max",
            clients=args.clients,
            duration=args.duration,
            latencies=latencies,
            failed=failed,
            steps=SHAPE_STEPS[shape],
            path=CRITICAL_PATH[shape],
            processes={
                "bench-process": {
                    "cpu_cores": round((cpu1.user + cpu1.system - cpu0.user - cpu0.system) / wall, 3),
                    "rss_mb_max": round(proc.memory_info().rss / 2**20, 1),
                }
            },
            extra={
                "errors": errors,
                # Every step ran, the last one included (W3: the step after the join).
                "correct": check.status == WorkflowStatus.COMPLETED
                and len(ran) == SHAPE_STEPS[shape]
                and last in ran,
                "steps_executed": len(ran),
                "last_step_ran": last in ran,
                "instances_in_memory": len(engine._instances),
            },
        )
        results.append(result.to_json())
        gc.collect()
    memory = await memory_check(args.memory_seconds, args.clients) if args.memory_seconds > 0 else None
    return {"results": results, "memory": memory}


async def memory_check(seconds: float, clients: int) -> dict[str, Any]:
    registry = WorkflowRegistry()
    workflow = workflow_class("W1")
    registry.register(workflow)
    engine = LocalExecutionEngine(registry)
    track = RssTrack()
    track.sample()
    completed = 0
    for _ in range(int(seconds)):
        latencies, _, _ = await closed_loop(lambda: run_one(engine, workflow), clients=clients, duration=1.0)
        completed += len(latencies)
        track.sample()
    return {
        "system": "litestar-workflows",
        "shape": "W1",
        "seconds": seconds,
        "completed": completed,
        "rss_mb": track.points,
        "rss_growth_mb": round(track.points[-1][1] - track.points[0][1], 1),
        "instances_in_memory": len(engine._instances),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.litestar_engine")
    parser.add_argument("--shapes", default="W1,W2,W3")
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--memory-seconds", type=float, default=20)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    with open(args.out, "w") as handle:
        json.dump(asyncio.run(measure(args)), handle, indent=1)


if __name__ == "__main__":
    main()
