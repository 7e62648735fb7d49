"""The metrics seam, and in-process measurements of the event loop.

`Metrics` is what the job engine, the WaveSpeed client, the Discord presenter and the loop monitor
report to: one typed method per fact, each a no-op here. Tests that don't care get this class;
the running bot gets `bot.ops.prometheus.PrometheusMetrics`, which turns the same calls into
Prometheus series. Every label a method takes is bounded (a literal, an enum, an HTTP status or a
Discord error code): never a user id, a guild id, a prompt or a prediction id.

`LoopLagMonitor` measures how late the event loop wakes up: a task sleeps `interval` seconds over
and over, and how much later than asked it wakes is the loop's lag (time spent in callbacks that
don't yield). Each sample goes to the metrics; the summary is logged at shutdown, one line, so a
benchmark (or an operator) can read it from the log.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
from collections.abc import Callable
from typing import Literal

from bot.refusals import Refused

log = logging.getLogger(__name__)

# How a job ended. `failed` carries a reason (`failure_reason`); the others need none.
Outcome = Literal["delivered", "failed", "timeout", "unconfirmed", "cancelled"]
# Where a result went: the placeholder became it, a new channel message (the interaction token had
# expired), a DM (the bot may not post in the channel), or links (Discord refused the upload).
Route = Literal["placeholder", "channel", "dm", "links"]
# The WaveSpeed endpoints the bot calls.
Endpoint = Literal["submit", "result", "balance", "download"]

# Exception class names that are a job's failure reason as they are; anything else is `internal`.
_REASONS = {
    "AuthenticationError": "authentication",
    "RateLimitedError": "rate_limited",
    "ServerError": "server_error",
    "InvalidRequestError": "invalid_request",
    "ConnectionFailedError": "connection",
    "RequestTimeoutError": "connection",
    "MalformedResponseError": "malformed_response",
    "PredictionFailedError": "prediction_failed",
    "OutputError": "output",
    "OutputTooLargeError": "output",
    "InvalidTransitionError": "moved_elsewhere",
    "HTTPException": "discord",
    "Forbidden": "discord",
    "NotFound": "discord",
    "DiscordServerError": "discord",
}


def failure_reason(error: BaseException) -> str:
    """A bounded label for why a job failed: the kind of error, never its text."""
    for kind in type(error).__mro__:
        if kind.__name__ in _REASONS:
            return _REASONS[kind.__name__]
    return "internal"


class Metrics:
    """The seam: every method does nothing. Subclasses record."""

    # -- the job engine ---------------------------------------------------------------------------
    def job_finished(self, outcome: Outcome, reason: str = "") -> None:
        """A job ended (delivered, failed with `reason`, timed out, unconfirmed, or cancelled)."""

    def queue_waited(self, seconds: float) -> None:
        """From the command to the submit that WaveSpeed accepted."""

    def generated(self, seconds: float) -> None:
        """From the submit to WaveSpeed's final answer."""

    def delivered(self, seconds: float, route: Route) -> None:
        """From WaveSpeed's final answer to the images reaching Discord, and how they went."""

    def images(self, generated: int, flagged: int) -> None:
        """Images WaveSpeed made for a job (and so billed), and how many it flagged as possibly NSFW."""

    def queue(self, *, waiting: int, running: int) -> None:
        """The shared line (every process's) as the database holds it now."""

    def refused(self, reason: Refused) -> None:
        """A request refused before anything was sent (a limit, a gate, a blocked term, a cap...)."""

    # -- the services -----------------------------------------------------------------------------
    def wavespeed_request(self, endpoint: Endpoint, status: int | str) -> None:
        """One HTTP request to WaveSpeed and its status (a number, or `error`/`timeout`)."""

    def balance(self, dollars: float) -> None:
        """The WaveSpeed account's balance, as last read."""

    def discord_error(self, status: int, code: int) -> None:
        """Discord answered a REST request with an error status (and its JSON error code, 0 if none)."""

    # -- the process ------------------------------------------------------------------------------
    def loop_lag(self, seconds: float) -> None:
        """How late the event loop woke up a sleeping task."""


NOOP = Metrics()


class LoopLagMonitor:
    def __init__(
        self, interval: float = 0.05, keep: int = 100_000, on_sample: Callable[[float], None] | None = None
    ) -> None:
        self.interval = interval
        self._keep = keep
        self._on_sample = on_sample
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="loop-lag-monitor")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.interval)
            lag = max(0.0, loop.time() - before - self.interval)
            if len(self.samples) < self._keep:
                self.samples.append(lag)
            if self._on_sample is not None:
                self._on_sample(lag)

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
