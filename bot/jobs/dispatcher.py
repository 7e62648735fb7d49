"""The process's side of the shared queue: claim jobs when a slot is free, show waiting members
their place in line, keep this process's leases and adopt the jobs of processes that died.

The database holds the line, the cap and the 429 pause (`bot.storage.base`); memory holds only a
wake-up event, set by a notification (a job joined the line, a slot came free, a pause was set)
or by a steady tick that also covers a lost notification and the end of a pause. Any number of
processes run this loop on one database and share one fair line and one cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from bot.jobs.events import Presenter
from bot.jobs.foreground import Foreground
from bot.jobs.model import JobRecord, JobState
from bot.jobs.progress import ProgressReporter, Status
from bot.jobs.runner import JobRunner
from bot.storage.base import QUEUE, Storage
from bot.tasks import create_task

log = logging.getLogger(__name__)

S = JobState
# How often the loop looks even without a wake-up (a lost notification, a pause that ended).
TICK = 1.0
# Jobs claimed by one statement at most: a process takes its fair share of free slots, not all.
CLAIM_BATCH = 32
# Reading the line for positions may take this many times its own duration between reads.
READ_SHARE = 20


class Dispatcher:
    def __init__(
        self,
        storage: Storage,
        runner: JobRunner,
        presenter: Presenter,
        *,
        capacity: int,
        tick: float = TICK,
        positions_interval: float = 0.25,
        foreground: Foreground | None = None,
    ) -> None:
        self._storage = storage
        self._runner = runner
        self._presenter = presenter
        self._capacity = capacity
        self._tick = tick
        self._positions_interval = positions_interval
        self._foreground = foreground or Foreground(max_wait=0.0)
        self._wake = asyncio.Event()
        self._watching: dict[int, ProgressReporter] = {}  # this process's queued jobs, by id
        self._told: dict[int, Status] = {}  # the last status given to each watched job's reporter
        self._loops: list[asyncio.Task[None]] = []
        self._last_positions = 0.0
        self._positions_took = 0.0  # how long the last read of the line took
        storage.listen(self._on_notification)

    def _on_notification(self, channel: str, payload: str) -> None:
        if channel == QUEUE:
            self._wake.set()

    async def start(self) -> int:
        """Adopt what needs an owner (on SQLite, one process: every unfinished job), then run the
        loops. Returns how many jobs were adopted."""
        adopted = await self._adopt(everything=self._storage.backend == "sqlite")
        self._loops = [
            create_task(self._claim_loop(), name="claim-jobs"),
            create_task(self._lease_loop(), name="job-leases"),
        ]
        return adopted

    async def stop(self) -> None:
        for loop in self._loops:
            loop.cancel()
        for loop in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await loop
        for job_id in list(self._watching):
            await self._unwatch(job_id)

    # -- queued jobs this process answered -----------------------------------------------------------
    async def placed(self, job: JobRecord) -> None:
        """A job's placeholder is up (recorded): show its place in line and wake every claimer."""
        self.watch(job)
        await self._storage.notify(QUEUE)

    def watch(self, job: JobRecord) -> None:
        if job.id not in self._watching and not self._runner.running(job.id):
            self._watching[job.id] = self._runner.reporter(job)
        self._wake.set()

    async def cancel(self, job_id: int) -> JobRecord | None:
        """Take a waiting job out of line (nothing was sent). None if it has started or ended."""
        await self._unwatch(job_id)  # no position edit may land after the cancellation
        cancelled = await self._storage.cancel(job_id, finished_at=time.time())
        if cancelled is not None:
            await self._storage.notify(QUEUE)
        return cancelled

    async def _unwatch(self, job_id: int) -> None:
        self._told.pop(job_id, None)
        reporter = self._watching.pop(job_id, None)
        if reporter is not None:
            await reporter.close()

    # -- the loops ---------------------------------------------------------------------------------------
    async def _claim_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._tick):
                    await self._wake.wait()
            self._wake.clear()
            try:
                # Claims start submits and placeholder edits: they wait while a burst is answered.
                await self._foreground.quiet()
                await self._claim_all()
                await self._show_positions()
            except Exception:
                log.exception("the queue loop failed; trying again")

    async def _claim_all(self) -> None:
        """Claim while slots are free, a batch per statement: a burst of commands must not queue a
        statement per job in front of the members' own (on SQLite every statement waits its turn)."""
        while self._runner.accepting:
            claimed = await self._storage.claim(capacity=self._capacity, limit=CLAIM_BATCH)
            for job in claimed:
                await self._unwatch(job.id)
                log.info("job %s claimed (round %s)", job.id, job.queue_tag)
                self._runner.start(job)
            if len(claimed) < CLAIM_BATCH:
                return

    async def _show_positions(self) -> None:
        """Each waiting job this process answered shows its place in the one line, all processes'."""
        if not self._watching:
            return
        since = time.monotonic() - self._last_positions
        # At most a few reads of the line a second, and reading it takes at most a 20th of the time:
        # a line thousands long (a burst) is read every second or two, which is all its placeholders
        # need (past LIVE_POSITIONS they show "further back").
        interval = max(self._positions_interval, READ_SHARE * self._positions_took)
        if since < interval:
            asyncio.get_running_loop().call_later(interval - since, self._wake.set)
            return
        self._last_positions = began = time.monotonic()
        watched = set(self._watching)  # a job placed while the line is read is judged next time
        line = await self._storage.waiting()
        paused_until = await self._storage.paused_until()
        self._positions_took = time.monotonic() - began
        resumes_at = paused_until if paused_until > time.time() else None
        positions = {w.job_id: n for n, w in enumerate(line, start=1)}
        for job_id in watched & set(self._watching):
            if job_id in positions:
                status = Status.waiting(positions[job_id], resumes_at)
                if self._told.get(job_id) != status:  # most of a long line shows "further back" unchanged
                    self._told[job_id] = status
                    self._watching[job_id].update(status)
            else:  # claimed (here or elsewhere), cancelled, or adopted by another process
                await self._unwatch(job_id)

    async def _lease_loop(self) -> None:
        """Renew this process's leases three times a lease; look for orphans every tick, so a dead
        process's jobs are taken over within about LEASE_SECONDS plus a tick."""
        renew_every = max(0.2, self._storage.lease_seconds / 3)
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(min(self._tick, renew_every))
            try:
                if time.monotonic() - renewed >= renew_every:
                    await self._storage.renew_leases()
                    renewed = time.monotonic()
                await self._adopt()
            except Exception:
                log.exception("lease upkeep failed; trying again")

    async def _adopt(self, *, everything: bool = False) -> int:
        """Take over unfinished jobs whose owner is gone: a waiting one is watched, a running one
        resumed, one caught mid-submit answered as unconfirmed (never sent again)."""
        adopted = await self._storage.adopt_orphans(everything=everything)
        for job in adopted:
            log.info("adopting job %s (%s)", job.id, job.state)
            if job.state is S.QUEUED:
                placed = job if job.message_id is not None else await self._answered(job)
                if placed is not None:
                    self.watch(placed)
            elif not self._runner.running(job.id):
                self._runner.start(job, resumed=True)
        if adopted:
            await self._storage.notify(QUEUE)
        return len(adopted)

    async def _answered(self, job: JobRecord) -> JobRecord | None:
        """A job whose process stopped around answering the command: if the answer went out it is the
        placeholder; if not, the member saw "the application did not respond" and nothing runs."""
        found = await self._presenter.find_placeholder(job)
        if found is None:
            await self._storage.fail(job.id, outcome="not answered", detail="never answered", finished_at=time.time())
            log.info("job %s was never answered: its process stopped before the placeholder went out", job.id)
            return None
        return await self._storage.record_placeholder(job.id, found, detail="placeholder found")
