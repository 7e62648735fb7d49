"""The poll schedule's math, with known distributions and answers worked out by hand (the client
driving it against the fake WaveSpeed: tests/test_wavespeed_client.py)."""

from __future__ import annotations

import itertools
import math
import random
from statistics import NormalDist

import pytest

from bot.config import ConfigError, load_settings
from bot.wavespeed.schedule import FEW, FLOOR, KEEP, MIN_SAMPLES, Plan, PollSchedule, quantiles


def taught(samples: list[tuple[float, float]], **kwargs) -> PollSchedule:
    schedule = PollSchedule(interval=0.8, first_default=2.0, rng=random.Random(7), **kwargs)
    for lo, hi in samples:
        schedule.observe(lo, hi)
    return schedule


def spread(lo: float, hi: float, count: int) -> list[tuple[float, float]]:
    """`count` completions, each seen within its own equal slice of (lo, hi]: an even spread."""
    step = (hi - lo) / count
    return [(lo + i * step, lo + (i + 1) * step) for i in range(count)]


def test_uniform_times_get_evenly_spaced_polls():
    plan = taught(spread(2.0, 6.5, 27)).plan()
    # Ninths of 2-6.5 s: every 0.5 s from 2.5 s; then every POLL_INTERVAL_SECONDS (0.8 s).
    assert plan.points == pytest.approx([2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 6.5])
    assert list(plan.times(8.0)) == pytest.approx([2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 6.5, 7.3])


def test_few_predictions_in_flight_get_elevenths():
    schedule = taught(spread(2.0, 7.5, 33))
    # Elevenths of 2-7.5 s: every 0.5 s from 2.5 s, while at most FEW predictions are in flight.
    elevenths = [2.0 + 0.5 * k for k in range(1, 12)]
    assert schedule.plan(in_flight=1).points == pytest.approx(elevenths)
    assert schedule.plan(in_flight=FEW).points == pytest.approx(elevenths)
    # More in flight: ninths, every 0.611 s from 2.611 s.
    ninths = [2.0 + 5.5 * k / 9 for k in range(1, 10)]
    assert schedule.plan(in_flight=FEW + 1).points == pytest.approx(ninths)


def test_peaked_times_get_dense_polls_at_the_peak_and_few_in_the_tails():
    # 27 completions: 3 spread over 2-4 s, 21 over 4.25-6 s (12 per second), 3 over 6-8 s.
    samples = spread(2.0, 4.0, 3) + spread(4.25, 6.0, 21) + spread(6.0, 8.0, 3)
    plan = taught(samples).plan()
    # Each ninth is 3 completions: the first ends at 4 s; then one every 3/12 = 0.25 s through the
    # peak (4.5 ... 6.0); the last ninth ends at 8 s, and that 2 s gap is cut in two (no gap in a
    # plan is wider than the SDK's 1 s).
    assert plan.points == pytest.approx([4.0, 4.5, 4.75, 5.0, 5.25, 5.5, 5.75, 6.0, 7.0, 8.0])


def test_a_log_normal_gets_its_ninths():
    # Median 5 s, sigma 0.2105 (90 % within 3.5-7 s, the benchmark's peaked times): 200 completions
    # at its 0.25 %, 0.75 %, ... 99.75 % points, each seen exactly.
    sigma, normal = 0.2105, NormalDist()
    times = [5.0 * math.exp(sigma * normal.inv_cdf((i + 0.5) / 200)) for i in range(200)]
    plan = taught([(t, t) for t in times]).plan()
    # 5 * exp(sigma * z) for the normal's ninths, z = -1.2206, -0.7647, -0.4307, -0.1397, ...: by
    # hand, 3.867, 4.257, 4.567, 4.855, 5.149, 5.475, 5.873, 6.465 s; the last ninth ends at the
    # slowest, 9.03 s, and that gap is cut into three.
    assert plan.points[:8] == pytest.approx([3.867, 4.257, 4.567, 4.855, 5.149, 5.475, 5.873, 6.465], abs=0.02)
    assert plan.points[8:] == pytest.approx([7.32, 8.17, 9.03], abs=0.01)
    gaps = [b - a for a, b in itertools.pairwise(plan.points)]
    assert max(gaps[:7]) < 0.6 and max(gaps) <= 1.0 + 1e-9


def test_each_prediction_takes_the_plan_at_a_phase_of_its_own():
    plan = taught(spread(2.0, 6.5, 27)).plan()
    # Halfway to the next point (the last: half a tail, 0.4 s), so a burst is not polled in step.
    halfway = [2.75, 3.25, 3.75, 4.25, 4.75, 5.25, 5.75, 6.25, 6.9]
    assert plan.shifted(0.5).points == pytest.approx(halfway)
    assert list(plan.shifted(0.5).times(8.4)) == pytest.approx([*halfway, 7.7])
    assert plan.shifted(0.0) == plan
    fallback = PollSchedule(interval=0.8, first_default=2.0).plan()
    assert fallback.shifted(0.25).points == pytest.approx([2.2])  # never before FIRST_POLL_SECONDS


def test_polls_never_come_closer_than_the_floor():
    # A peak so narrow (21 completions within 0.7 s) that its ninths are 0.1 s apart.
    samples = spread(2.0, 4.0, 3) + spread(4.8, 5.5, 21) + spread(6.0, 8.0, 3)
    plan = taught(samples).plan()
    assert plan.points[:8] == pytest.approx([4.0, 4.9, 5.0, 5.1, 5.2, 5.3, 5.4, 5.5])
    # 5.0 comes 0.25 s after 4.9 instead; the points passed meanwhile need no poll of their own.
    assert list(plan.times(7.0)) == pytest.approx([4.0, 4.9, 5.15, 5.4, 5.65, 6.3333], abs=1e-3)
    rng = random.Random(3)
    for _ in range(50):
        noisy = [(t - rng.uniform(0, 0.3), t) for t in (rng.gauss(5, rng.uniform(0.01, 2)) for _ in range(40))]
        times = list(taught([s for s in noisy if s[0] >= 0]).plan().times(20.0))
        assert times[0] >= FLOOR and min(b - a for a, b in itertools.pairwise(times)) >= FLOOR - 1e-9


def test_before_enough_completions_the_steady_fallback():
    schedule = taught(spread(2.0, 8.0, MIN_SAMPLES - 1))
    assert schedule.plan() == Plan((2.0,), 0.8)
    assert list(schedule.plan().times(4.0)) == pytest.approx([2.0, 2.8, 3.6])
    schedule.observe(7.5, 8.0)
    assert schedule.plan().points[0] == pytest.approx(2 + 3 * 6 / 26)  # the 27th completion: learned
    pushed = PollSchedule(interval=10.0, first_default=10.0, learn=False)
    for lo, hi in spread(2.0, 8.0, 50):
        pushed.observe(lo, hi)
    assert pushed.plan() == Plan((10.0,), 10.0) and not pushed.samples  # push: a safety net, nothing learned


def test_a_prediction_picked_up_late_is_polled_at_once_then_on_the_plan():
    plan = taught(spread(2.0, 6.5, 27)).plan()  # polls at 2.5, 3.0, ... 6.5
    assert plan.next_poll(1.0, None) == pytest.approx(2.5)  # not due yet
    assert plan.next_poll(5.3, None) == pytest.approx(5.3)  # 2.5 ... 5.0 passed: one poll now
    assert plan.next_poll(5.3, 5.3) == pytest.approx(5.55)  # 5.5, but not closer than the floor
    assert list(plan.times(7.0, start=5.3)) == pytest.approx([5.3, 5.55, 6.0, 6.5])
    assert plan.next_poll(30.0, None) == 30.0  # long after the plan: at once
    assert plan.next_poll(30.0, 30.0) == pytest.approx(30.5)  # then the tail's rhythm, 6.5 + 0.8 k
    fallback = PollSchedule(interval=0.8, first_default=2.0).plan()
    assert fallback.next_poll(10.0, None) == 10.0 and fallback.next_poll(10.0, 10.0) == pytest.approx(10.8)


def test_a_late_poll_does_not_shift_the_rest_of_the_plan():
    plan = taught(spread(2.0, 6.5, 27)).plan()
    assert plan.next_poll(4.05, 4.05) == pytest.approx(4.5)  # the 4.0 poll went out 0.05 s late
    assert plan.next_poll(4.4, 4.4) == pytest.approx(4.65)  # the 4.0 poll went out at 4.4: floor
    assert plan.next_poll(4.7, 4.4) == pytest.approx(4.7)  # ... and its answer came late: due now


def test_a_burst_finishing_shortest_first_does_not_skew_the_sample():
    # 1000 predictions submitted together finish in order, 2 s to 8 s: the last KEEP of them would
    # all be over 6.8 s. The sample is a random fifth of them, so its ninths stay near 2-8 s's.
    schedule = taught(spread(2.0, 8.0, 1000))
    assert len(schedule.samples) == KEEP
    assert schedule.plan().points == pytest.approx([2 + 2 * k / 3 for k in range(1, 10)], abs=0.35)
    # Later completions replace older ones: after 3000 more of 10-11 s, few of the old are left.
    for lo, hi in spread(10.0, 11.0, 3000):
        schedule.observe(lo, hi)
    assert sum(hi <= 8.0 for _, hi in schedule.samples) < KEEP // 10


def test_quantiles_of_point_masses_and_intervals():
    # Two at exactly 1 s and two spread over 2-4 s: the first two quarters at 1 s, then 3 s and 4 s.
    assert quantiles([(1.0, 1.0), (1.0, 1.0), (2.0, 4.0), (2.0, 4.0)], 4) == pytest.approx([1.0, 1.0, 3.0, 4.0])
    assert quantiles([(0.0, 2.0)], 4) == pytest.approx([0.5, 1.0, 1.5, 2.0])


def test_poll_settings_below_the_floor_are_refused():
    secrets = {"discord_token": "t" * 40, "wavespeed_api_key": "k" * 40}
    for name in ("poll_interval_seconds", "first_poll_seconds"):
        with pytest.raises(ConfigError, match=name.upper()):
            load_settings(_env_file=None, **secrets, **{name: 0.2})
        assert getattr(load_settings(_env_file=None, **secrets, **{name: FLOOR}), name) == FLOOR
