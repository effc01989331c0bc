"""What waking up costs on this machine: the same small piece of work timed back to back (hot) and
after a 10 ms sleep each time (a process woken from idle), and the sleep alone, in CPU time.

On a VM whose idle vCPU halts and exits to the host (this one: the ``haltpoll`` cpuidle driver with
``haltpoll.guest_halt_poll_ns=0`` on the kernel command line), a process that sleeps between
messages pays for each wake-up, and the work it then does runs on cold caches. Every process of the
suite sleeps between messages at moderate load, so its CPU per message is higher there than at its
maximum, where it seldom sleeps.

    python -m bench.wakeup_cost [--rounds 3]
"""

# ruff: noqa: T201

from __future__ import annotations

import argparse
import json
import time


def _work() -> dict[int, str]:
    """~0.4 ms of ordinary Python: small dicts and JSON, like handling a message."""
    return {i: json.dumps({"a": i, "b": [1, 2, 3]}) for i in range(200)}


def measure(*, hot_calls: int = 2000, woken_calls: int = 200, sleep: float = 0.01) -> dict[str, float]:
    """CPU microseconds: per call hot, per call after a sleep, per sleep alone."""
    started = time.process_time()
    for _ in range(hot_calls):
        _work()
    hot = (time.process_time() - started) / hot_calls
    started = time.process_time()
    for _ in range(woken_calls):
        time.sleep(sleep)
        _work()
    woken = (time.process_time() - started) / woken_calls
    started = time.process_time()
    for _ in range(woken_calls):
        time.sleep(sleep)
    alone = (time.process_time() - started) / woken_calls
    return {"hot_us": hot * 1e6, "after_sleep_us": woken * 1e6, "sleep_alone_us": alone * 1e6}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.wakeup_cost")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    for _ in range(args.rounds):
        r = measure()
        print(
            f"work hot {r['hot_us']:.0f} us, after a 10 ms sleep {r['after_sleep_us']:.0f} us "
            f"({r['after_sleep_us'] / r['hot_us']:.2f}x); "
            f"a sleep and wake-up alone {r['sleep_alone_us']:.0f} us of CPU"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
