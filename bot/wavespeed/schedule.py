"""When to poll a prediction. Without push, every poll is a request and every gap is latency, so the
schedule learns from finished predictions: it skips the time no prediction has ever finished in, then
polls at a steady interval. With push (a webhook), polls are only a safety net."""

from __future__ import annotations

from collections import deque


class PollSchedule:
    def __init__(
        self, *, interval: float = 0.6, first_default: float = 1.0, floor: float = 0.25, keep: int = 50
    ) -> None:
        self.interval = interval
        self._first_default = first_default
        self._floor = floor
        # Lower bounds of recent inference times: the elapsed time at the last poll that saw it unfinished.
        self._finished_after: deque[float] = deque(maxlen=keep)

    def observe(self, finished_after: float) -> None:
        self._finished_after.append(finished_after)

    def first_delay(self) -> float:
        """The first poll: just before the quickest prediction seen lately could have finished."""
        if not self._finished_after:
            return self._first_default
        return max(self._floor, min(self._finished_after) - self.interval / 2)

    def next_delay(self) -> float:
        return self.interval
