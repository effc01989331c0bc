"""W1-W3 on workflow_core's ``LocalEngine``, in this process (no servers): the same pure state
machine the orchestrator drives, with no-op machine steps (a chain of steps runs in one asyncio task,
parallel branches in a task each).

    python -m bench.local_engine --shapes W1,W2,W3 --duration 20 --clients 32 --out FILE

Closed loop: ``clients`` coroutines each start an instance and wait for its end
(``LocalEngine.wait``; the litestar-workflows harness likewise awaits the engine's own per-instance
task, at no cost per step). Then the memory check: W1 for ``--memory-seconds`` with the default
``keep_finished``, RSS sampled each second.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
from typing import Any

from bench.common import RssTrack, closed_loop, make_result
from bench.shapes import CRITICAL_PATH, SHAPE_STEPS, STEP_TYPE, wire
from workflow_core import BaseMachineStep, InstanceStatus, LocalEngine, WorkflowContext, load_definition


class Noop(BaseMachineStep):
    name = "noop"
    step_type = STEP_TYPE

    async def execute(self, context: WorkflowContext) -> None:
        return None


async def run_one(engine: LocalEngine, definition: Any) -> bool:
    state = await engine.start(definition)
    return (await engine.wait(state.instance_id)).status is InstanceStatus.COMPLETED


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    import psutil

    proc = psutil.Process()
    results: list[dict[str, Any]] = []
    for shape in args.shapes.split(","):
        engine = LocalEngine(steps=[Noop])
        definition = load_definition(wire(shape))

        def one(engine: LocalEngine = engine, definition: Any = definition) -> Any:
            return run_one(engine, definition)

        await closed_loop(one, clients=args.clients, duration=args.warmup)
        cpu0 = proc.cpu_times()
        began = time.perf_counter()
        latencies, failed, errors = await closed_loop(one, clients=args.clients, duration=args.duration)
        wall = time.perf_counter() - began
        cpu1 = proc.cpu_times()
        cores = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / wall
        # Correctness: the last step ran (W3: the step after the join).
        check = await engine.start(definition)
        final = await engine.wait(check.instance_id)
        executed = sum(
            1 for r in final.history if r.kind.value == "machine" and r.status.value == "completed"
        )
        result = make_result(
            system="LocalEngine",
            shape=shape,
            phase="max",
            clients=args.clients,
            duration=args.duration,
            latencies=latencies,
            failed=failed,
            steps=SHAPE_STEPS[shape],
            path=CRITICAL_PATH[shape],
            processes={
                "bench-process": {"cpu_cores": round(cores, 3), "rss_mb_max": proc.memory_info().rss / 2**20}
            },
            extra={
                "errors": errors,
                "correct": final.status is InstanceStatus.COMPLETED and executed == SHAPE_STEPS[shape],
                "steps_executed": executed,
            },
        )
        results.append(result.to_json())
        await engine.aclose()
        gc.collect()
    memory = await memory_check(args.memory_seconds, args.clients) if args.memory_seconds > 0 else None
    return {"results": results, "memory": memory}


async def memory_check(seconds: float, clients: int) -> dict[str, Any]:
    """W1 for ``seconds`` with the default ``keep_finished``: RSS each second, instances held."""
    engine = LocalEngine(steps=[Noop])
    definition = load_definition(wire("W1"))
    track = RssTrack()
    track.sample()
    completed = 0
    for _ in range(int(seconds)):
        latencies, _, _ = await closed_loop(
            lambda: run_one(engine, definition), clients=clients, duration=1.0
        )
        completed += len(latencies)
        track.sample()
    return {
        "system": "LocalEngine",
        "shape": "W1",
        "seconds": seconds,
        "completed": completed,
        "rss_mb": track.points,
        "rss_growth_mb": round(track.points[-1][1] - track.points[0][1], 1),
        "instances_in_memory": len(engine.instances()),
        "keep_finished": 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.local_engine")
    parser.add_argument("--shapes", default="W1,W2,W3")
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--memory-seconds", type=float, default=20)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    data = asyncio.run(measure(args))
    with open(args.out, "w") as handle:
        json.dump(data, handle, indent=1)


if __name__ == "__main__":
    main()
