"""When to poll a prediction: from how long recent predictions took, so that each poll catches about
the same share of the completions.

Without push every poll is a request against the host's account and every gap between two polls is
delay for the member, so the polls go where predictions finish. The schedule keeps a sample of
recent completion times (each known only as an interval: after the last poll that saw the prediction
running, up to the poll that saw it finished) and puts a poll at each ninth of their distribution:
the 1/9, 2/9, ... 9/9 quantiles. Inference times spread evenly over 2-8 s get a poll every 0.67 s;
times peaked around 5 s get polls 0.3 s apart at the peak and few in the tails. A job costs about
(9 + 1) / 2 = 5 polls whatever the spread (a little less at a random phase, below; more if it
outlives the plan), and waits about half of the gap it finishes in: the span of the times over
2 x 9 on average. Nine: the most polls that stay within the official SDK's when a thousand
predictions are in flight (5.0-6.0 per job in tests/perf/bench.py, where its threads fall behind
its 1 s loop), so that all of them buy delay. While at most FEW predictions are in flight, a plan
has FEW_SHARES points instead (an eleventh of the completions per poll: about one poll more per
job, a fifth less waiting), still within the SDK's polls per job when it keeps up (6.3-6.5 at 100
predictions): the account then sees a few hundred polls a second at most, and the member's wait
is what is left to save.

Bounds, whatever the sample says:
- FLOOR: two polls of one prediction are never closer than 0.25 s. Every poll is a request on the
  host's key, and WaveSpeed documents no request budget for polls, only that 429 is an account
  limit, so the bot stays well inside what it can justify: at most 4 requests a second per
  prediction, so at most 4 x MAX_CONCURRENT_JOBS a second for the account (12 at the default 3),
  and on average fewer per job than the official SDK's steady 1 s loop. Polling closer would save
  little: a 0.25 s gap costs 0.125 s of delay on average, less than a poll's own round trip over the
  internet and the image's download and upload to Discord that follow it.
- MAX_GAP: no gap inside a plan is wider than 1 s, the SDK's rhythm: a tail share of a peaked
  distribution (the slowest ninth, spread over seconds) is split, so no job waits longer for its
  poll than with the SDK.
- Before MIN_SAMPLES completions (a fresh start), and for push, the plan is the steady fallback:
  the first poll at `first_default`, then every `interval`. A prediction that outlives its plan is
  polled every `interval` from the plan's last point.

A plan is fixed when a prediction's wait begins: completions that arrive meanwhile (a burst's short
ones come first) change the plans of later predictions only. Each prediction takes it at a random
phase (every point moved the same random share of the way to the next), so that a burst's
predictions are not all polled at the same moments. The sample is a uniform random choice
(a reservoir) among roughly the last SPAN completions, not the last few: a burst's completions
arrive shortest first, and a window of the latest ones would see only its tail.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

FLOOR = 0.25  # seconds: the least gap between two polls of one prediction (see above)
MAX_GAP = 1.0  # seconds: the widest gap inside a learned plan, the official SDK's rhythm
SHARES = 9  # polls per distribution: each catches about 1/9 of the completions
FEW = 200  # predictions in flight: up to this many, plans have FEW_SHARES points (see above)
FEW_SHARES = 11
MIN_SAMPLES = 3 * SHARES  # fewer completions than this and the schedule does not guess
KEEP = 200  # completion times kept
SPAN = 1000  # ... chosen among about this many recent completions
EPSILON = 1e-3  # seconds: a poll this close to a point counts as that point's poll


@dataclass(frozen=True)
class Plan:
    """When to poll one prediction, in seconds since its submit: at each of `points`, then every
    `tail` after the last one; never two polls closer than `floor`."""

    points: tuple[float, ...]
    tail: float
    floor: float = FLOOR

    def due_after(self, moment: float) -> float:
        """The first planned poll after `moment` (the plan's points, then its tail's rhythm)."""
        index = bisect.bisect_right(self.points, moment + EPSILON)
        if index < len(self.points):
            return self.points[index]
        last = self.points[-1]
        return last + self.tail * (math.floor((moment + EPSILON - last) / self.tail) + 1)

    def next_poll(self, now: float, last: float | None) -> float:
        """When to poll next, given that `now` seconds have passed since the submit and the last
        poll was sent at `last` (None: not polled yet). A point that passed without a poll (a job
        picked up after a restart, a late wake-up) is due at once: one poll covers all of them."""
        if last is None:
            return max(now, self.points[0])
        return max(now, self.due_after(last), last + self.floor)

    def shifted(self, fraction: float) -> Plan:
        """This plan with each point moved `fraction` (0 to 1) of the way to the next one (the last,
        that share of a tail): one prediction's own phase. Predictions submitted together share a
        plan; in step, they would all be polled at the same moments and the completions found at
        once would reach the delivery queue in waves. Each poll still catches about its share."""
        after = [b - a for a, b in itertools.pairwise(self.points)] + [self.tail]
        return Plan(tuple(p + fraction * gap for p, gap in zip(self.points, after, strict=True)), self.tail, self.floor)

    def times(self, until: float, *, start: float = 0.0) -> Iterator[float]:
        """The polls of a prediction that is still running at `until`, each sent on time (for tests
        and the README): where the plan puts them once the floor has been applied."""
        moment, last = start, None
        while (moment := self.next_poll(moment, last)) <= until:
            yield moment
            last = moment


def quantiles(samples: Sequence[tuple[float, float]], shares: int) -> list[float]:
    """The k/shares quantiles (k = 1..shares) of the distribution in which each sample's mass is
    spread evenly over its interval (lo, hi]: where the fraction finished reaches 1/shares, 2/shares,
    ... 1. A sample with no width is a point mass at hi."""
    # Walk the piecewise linear distribution function: at each interval end its slope changes (or,
    # for a point mass, it jumps); targets are in units of one sample's mass.
    slope_change: dict[float, float] = defaultdict(float)
    jump: dict[float, float] = defaultdict(float)
    for lo, hi in samples:
        if hi - lo > 1e-9:
            slope_change[lo] += 1 / (hi - lo)
            slope_change[hi] -= 1 / (hi - lo)
        else:
            jump[hi] += 1
    edges = sorted(slope_change.keys() | jump.keys())
    targets = [len(samples) * k / shares for k in range(1, shares + 1)]
    found: list[float] = []
    mass = slope = 0.0
    previous = edges[0]
    for edge in edges:
        gained = slope * (edge - previous)
        while len(found) < len(targets) and mass + gained >= targets[len(found)] - 1e-9:
            found.append(previous + (targets[len(found)] - mass) / slope)
        mass += gained + jump.get(edge, 0.0)
        while len(found) < len(targets) and mass >= targets[len(found)] - 1e-9:
            found.append(edge)
        slope += slope_change.get(edge, 0.0)
        previous = edge
    found += [edges[-1]] * (len(targets) - len(found))  # rounding: the last target is the last edge
    found[-1] = edges[-1]
    return found


def split_wide_gaps(points: Sequence[float], max_gap: float) -> list[float]:
    """`points` with every gap wider than `max_gap` cut into equal parts no wider than it."""
    out = [points[0]]
    for point in points[1:]:
        parts = math.ceil((point - out[-1]) / max_gap - 1e-9)
        out += [out[-1] + (point - out[-1]) * i / parts for i in range(1, parts)] + [point]
    return out


class PollSchedule:
    """The plan for each new prediction, learned from completions (see the module's docstring)."""

    def __init__(
        self,
        *,
        interval: float = 0.8,
        first_default: float = 2.0,
        learn: bool = True,
        shares: int = SHARES,
        few: int = FEW,
        few_shares: int = FEW_SHARES,
        floor: float = FLOOR,
        max_gap: float = MAX_GAP,
        min_samples: int = MIN_SAMPLES,
        keep: int = KEEP,
        span: int = SPAN,
        rng: random.Random | None = None,
    ) -> None:
        self.interval = max(interval, floor)
        self._fallback = Plan((max(first_default, floor),), self.interval, floor)
        self._learn = learn
        self._shares, self._floor, self._max_gap, self._min_samples = shares, floor, max_gap, min_samples
        self._few, self._few_shares = few, few_shares
        self._keep, self._span = keep, span
        self._rng = rng or random.Random()
        self.samples: list[tuple[float, float]] = []  # (last seen running, seen finished), seconds
        self._seen = 0
        self._plans: dict[int, Plan] = {}  # by its number of shares, until the sample changes

    def observe(self, running_at: float, finished_at: float) -> None:
        """A prediction was last seen running `running_at` seconds after its submit (0: never) and
        seen finished at `finished_at`. Kept with probability keep / min(seen, span), in place of
        a random one: a uniform sample of about the last `span` completions."""
        if not self._learn or not 0 <= running_at <= finished_at:
            return
        self._seen += 1
        sample = (running_at, finished_at)
        if len(self.samples) < self._keep:
            self.samples.append(sample)
        elif (slot := self._rng.randrange(min(self._seen, self._span))) < self._keep:
            self.samples[slot] = sample
        else:
            return
        self._plans.clear()

    def plan(self, *, in_flight: int | None = None) -> Plan:
        """The plan for a prediction whose wait begins now, `in_flight` predictions being waited for
        (None: not known, the ninths)."""
        if len(self.samples) < self._min_samples:
            return self._fallback
        shares = self._few_shares if in_flight is not None and in_flight <= self._few else self._shares
        if (plan := self._plans.get(shares)) is None:
            points = quantiles(self.samples, shares)
            points[0] = max(points[0], self._floor)
            points = split_wide_gaps(sorted(points), self._max_gap)
            plan = self._plans[shares] = Plan(tuple(points), self.interval, self._floor)
        return plan
