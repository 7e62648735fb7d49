"""When to poll a prediction. Without push, every poll is a request and every gap is latency, so the
schedule learns from finished predictions: it skips the time in which few of them finish (before
the 10th percentile of recent inference times), then polls at a steady interval. With push (a
webhook), polls are only a safety net."""

from __future__ import annotations

from collections import deque

MIN_SAMPLES = 5  # fewer than this and the schedule doesn't guess


class PollSchedule:
    def __init__(
        self, *, interval: float = 0.8, first_default: float = 2.0, floor: float = 0.25, keep: int = 50
    ) -> None:
        self.interval = interval
        self._first_default = first_default
        self._floor = floor
        # Recent inference times, each the midpoint between the last poll that saw the prediction
        # running and the one that saw it finished.
        self._durations: deque[float] = deque(maxlen=keep)

    def observe(self, running_at: float, finished_at: float) -> None:
        self._durations.append((running_at + finished_at) / 2)

    def first_delay(self) -> float:
        """The first poll: half an interval before the 10th percentile of recent inference times."""
        if len(self._durations) < MIN_SAMPLES:
            return self._first_default
        early = sorted(self._durations)[len(self._durations) // 10]
        return max(self._floor, early - self.interval / 2)

    def next_delay(self) -> float:
        return self.interval
