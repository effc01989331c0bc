"""The soak's RSS trend: fitted on a process's longest lifetime, restarts included."""

from __future__ import annotations

from wf_stack.faults import RssSampler


def _sampler(samples: list[tuple[float, float]], pids: list[int]) -> RssSampler:
    sampler = RssSampler({"svc": lambda: None}, interval=1.0)
    sampler.samples = {"svc": samples}
    sampler.pids = {"svc": pids}
    return sampler


def test_a_restarted_process_is_judged_on_its_longest_lifetime() -> None:
    # 10 s growing fast (then killed), 30 s flat after the restart.
    samples = [(float(t), 100.0 + 6.0 * t) for t in range(10)] + [(float(t), 50.0) for t in range(10, 40)]
    trend = _sampler(samples, [1] * 10 + [2] * 30).trends()["svc"]
    assert trend.lifetimes == 2 and trend.lifetime_seconds == 29.0
    assert trend.slope_mb_per_min == 0.0
    assert trend.max_mb == 154.0 and trend.last_mb == 50.0


def test_a_steady_leak_shows_as_a_slope() -> None:
    samples = [(float(t), 100.0 + t / 60) for t in range(0, 600, 3)]  # +1 MB a minute
    trend = _sampler(samples, [7] * len(samples)).trends()["svc"]
    assert trend.lifetimes == 1
    assert abs(trend.slope_mb_per_min - 1.0) < 0.01
