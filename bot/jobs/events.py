"""What the job engine tells the world, and the one seam it tells it through.

The engine (queue, leases, WaveSpeed calls, outputs) knows nothing of Discord: it calls a
`Presenter` with facts (a job waits at position n, it was submitted, it is generating, here are its
outputs, it failed for this typed reason, it was paused), and the presenter decides every embed,
file and word. Failures are the exceptions of `bot.wavespeed.errors` and the engine's own, which
carry data (a status, a code, a prediction id), not sentences.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from bot.jobs.model import JobRecord
from bot.jobs.outputs import PreparedOutputs
from bot.jobs.progress import Status
from bot.metrics import Route
from bot.wavespeed.errors import WaveSpeedError
from bot.wavespeed.models import Prediction


class UnconfirmedSubmitError(WaveSpeedError):
    """The submit was sent but never answered clearly: WaveSpeed may have taken it (and billed it),
    so it is not sent again."""

    reason = "unconfirmed"
    retryable = False


@dataclass(frozen=True)
class Delivered:
    """Where the result went: the message id when it is not the placeholder itself (a new channel
    message or a DM after the interaction token expired), None when the placeholder became it."""

    result_message_id: int | None
    link: str | None = None  # where that message is, for the moderation log
    route: Route = "placeholder"  # how it went, for the metrics


class Presenter(Protocol):
    """Turns the engine's facts into what members see (the Discord presenter, in production)."""

    async def show(self, job: JobRecord, status: Status, *, since: datetime | None) -> None:
        """The job is waiting (at `status.position`) or running (`status.stage`), since `since`."""

    async def deliver(self, job: JobRecord, prediction: Prediction, outputs: PreparedOutputs) -> Delivered:
        """Post the outputs under the server's policy; safe to repeat after a crash."""

    async def delivered(
        self, job: JobRecord, prediction: Prediction, outputs: PreparedOutputs, where: Delivered
    ) -> None:
        """Side effects once the delivery is recorded (the moderation log); never fails the job."""

    async def failed(self, job: JobRecord, error: BaseException) -> None:
        """The job ended without images; `error` says why."""

    async def paused(self, job: JobRecord) -> None:
        """The bot is stopping: the job will resume at the next start."""

    async def find_placeholder(self, job: JobRecord) -> int | None:
        """After a crash around answering the command: the placeholder's id, if it was posted."""
