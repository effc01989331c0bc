"""The PNG chart: throughput (instances/s, log scale) and end-to-end latency p50/p99 per system and shape."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def render(results: list[dict[str, Any]], path: Path, *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results if r["phase"] == "max" and r["shape"] in ("W1", "W2", "W3")]
    systems = list(dict.fromkeys(r["system"] for r in rows))
    shapes = ["W1", "W2", "W3"]
    by = {(r["system"], r["shape"]): r for r in rows}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 5.5))
    width = 0.8 / max(len(systems), 1)
    for i, system in enumerate(systems):
        xs = [j + i * width for j in range(len(shapes))]
        thr = [by.get((system, s), {}).get("instances_per_s", 0) or 0 for s in shapes]
        p50 = [by.get((system, s), {}).get("latency_ms", {}).get("p50", 0) or 0 for s in shapes]
        p99 = [by.get((system, s), {}).get("latency_ms", {}).get("p99", 0) or 0 for s in shapes]
        ax1.bar(xs, thr, width, label=system)
        bars = ax2.bar(xs, p50, width, label=f"{system} p50")
        ax2.scatter(xs, p99, marker="_", s=200, color=bars.patches[0].get_facecolor(), zorder=3)
        for x, value in zip(xs, thr, strict=True):
            ax1.annotate(f"{value:,.0f}", (x, value), ha="center", va="bottom", fontsize=7, rotation=90)
    for ax in (ax1, ax2):
        ax.set_xticks([j + width * (len(systems) - 1) / 2 for j in range(len(shapes))])
        ax.set_xticklabels(["W1: 1 step", "W2: 10 sequential", "W3: fan-out 10 + join + 1"])
        ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3)
    ax1.set_ylabel("completed instances / s (closed loop, log)")
    ax1.set_title("Throughput")
    ax2.set_ylabel("end-to-end latency ms (bar p50, tick p99, log)")
    ax2.set_title("Latency at max load")
    ax1.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
