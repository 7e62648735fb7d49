"""Placeholder progress: coalesced edits, at most one per `min_interval`, never blocking the poller."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


class Stage(enum.Enum):
    QUEUED = "queued"
    SUBMITTED = "submitted"
    PROCESSING = "processing"


def stage_for_status(status: str) -> Stage:
    return Stage.PROCESSING if status == "processing" else Stage.SUBMITTED


# Past this many jobs ahead, the placeholder says "more than N ahead" instead of a number that
# would need an edit every time the queue moves.
LIVE_POSITIONS = 20


@dataclass(frozen=True)
class Status:
    """What a placeholder shows while the job is not finished."""

    stage: Stage
    position: int | None = None  # 1 = next to start; LIVE_POSITIONS + 1 stands for "further back"
    resumes_at: float | None = None  # unix time WaveSpeed's back-pressure ends, while paused

    @classmethod
    def waiting(cls, position: int, resumes_at: float | None = None) -> Status:
        return cls(Stage.QUEUED, min(position, LIVE_POSITIONS + 1), resumes_at)


class ProgressReporter:
    """Shows the latest status on the placeholder.

    `update()` returns at once; a background task makes the edit, waiting out the rest of
    `min_interval` since the previous one and skipping stages that were overtaken meanwhile.
    `close()` stops it before the final edit: a pending edit is dropped, one in flight is awaited,
    so a stale progress edit can never land after the result.
    """

    def __init__(
        self,
        show: Callable[[Status], Awaitable[None]],
        *,
        min_interval: float = 1.5,
        wait_turn: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._show = show
        self._wait_turn = wait_turn  # an edit can wait while commands are being answered (bot.jobs.foreground)
        self._min_interval = min_interval
        self._latest: Status | None = None
        self._shown: Status | None = Status(Stage.QUEUED)  # the initial response already says "Queued"
        # The placeholder was just posted: count that as an edit. A quick job then never spends an
        # edit on "Submitted", and a burst of commands doesn't edit every placeholder at once while
        # Discord is still waiting for the burst's answers.
        self._last_edit = asyncio.get_running_loop().time()
        self._worker: asyncio.Task[None] | None = None
        self._editing = False
        self._closed = False

    def update(self, status: Status | Stage) -> None:
        if self._closed:
            return
        self._latest = status if isinstance(status, Status) else Status(status)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run(), name="placeholder-progress")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._latest is not None and self._latest != self._shown:
            await asyncio.sleep(max(0.0, self._last_edit + self._min_interval - loop.time()))
            if self._wait_turn is not None:
                await self._wait_turn()
            stage = self._latest
            if stage is None or stage == self._shown:
                break
            self._editing = True
            try:
                await self._show(stage)
            except Exception as error:  # a failed progress edit must not fail the job
                log.warning("progress edit failed: %s", error)
            finally:
                self._editing = False
                self._last_edit = loop.time()
            self._shown = stage

    async def close(self) -> None:
        self._closed = True
        worker = self._worker
        if worker is None or worker.done():
            return
        if not self._editing:
            worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
