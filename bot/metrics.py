"""In-process measurements the benchmark reads: how late the event loop wakes up.

A task sleeps `interval` seconds over and over; how much later than asked it wakes is the loop's
lag (time spent in callbacks that don't yield). The summary is logged at shutdown, one line, so a
benchmark (or an operator) can read it from the log.
"""

from __future__ import annotations

import asyncio
import logging
import statistics

log = logging.getLogger(__name__)


class LoopLagMonitor:
    def __init__(self, interval: float = 0.05, keep: int = 100_000) -> None:
        self.interval = interval
        self._keep = keep
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="loop-lag-monitor")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.interval)
            if len(self.samples) < self._keep:
                self.samples.append(max(0.0, loop.time() - before - self.interval))

    def summary(self) -> str:
        if not self.samples:
            return "event loop lag: no samples"
        ordered = sorted(self.samples)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        return (
            f"event loop lag: median {statistics.median(ordered) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
            f"max {ordered[-1] * 1000:.1f} ms over {len(ordered)} samples"
        )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        log.info(self.summary())
