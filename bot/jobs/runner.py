"""Runs durable `/imagine` jobs: submit, poll with progress, fetch outputs, deliver.

Every step is a transition in the job store before or after the side effect it names, so a job
can be picked up at any state after a restart (`recover`). The rules that keep that safe:
- the submit POST happens only from `submitting`, which is written first; a job found in
  `submitting` at start-up may have been billed and is never sent again (`unconfirmed`);
- a final Discord edit happens before the terminal state is written: repeating it is harmless,
  losing it is not;
- at shutdown, jobs still running are paused, not failed: their state stays and they resume.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Protocol

import discord

from bot import render
from bot.jobs.outputs import PreparedOutputs, prepare_outputs
from bot.jobs.progress import ProgressReporter, Stage, stage_for_status
from bot.jobs.store import JobRecord, JobState, JobStore
from bot.wavespeed.client import WaveSpeedClient
from bot.wavespeed.errors import ConnectionFailedError, MalformedResponseError, WaveSpeedError
from bot.wavespeed.models import Prediction

log = logging.getLogger(__name__)

S = JobState
# How long a last "paused" or "failed" edit may take before the bot gives up on it.
LAST_EDIT_TIMEOUT = 5.0
# A recovered job past its deadline still gets this long to fetch a result that may be ready.
RESUME_MINIMUM = 15.0


class UnconfirmedSubmitError(WaveSpeedError):
    """The submit was sent but never answered: WaveSpeed may have taken it, so it is not re-sent."""

    user_message = (
        "WaveSpeed did not confirm the request, and it may still have been made. The bot did not send "
        "it again, so you are not charged twice. If no image appears, run /imagine again."
    )
    retryable = False


class Target(Protocol):
    """Where a job shows its progress and result (the Discord placeholder, in production)."""

    async def edit(self, embed: discord.Embed) -> None: ...

    async def deliver(self, embed: discord.Embed, outputs: PreparedOutputs) -> discord.Message | None: ...


class JobRunner:
    def __init__(
        self,
        client: WaveSpeedClient,
        jobs: JobStore,
        *,
        targets: Callable[[JobRecord], Target],
        model: str,
        timeout: float,
        max_concurrent: int = 3,
        progress_interval: float = 1.5,
    ) -> None:
        self._client = client
        self._jobs = jobs
        self._targets = targets
        self._model = model
        self._timeout = timeout
        self._progress_interval = progress_interval
        self._slots = asyncio.Semaphore(max_concurrent)  # FIFO: waiters are served in order
        self._tasks: set[asyncio.Task[None]] = set()
        self.accepting = True

    @property
    def active(self) -> int:
        return len(self._tasks)

    def start(self, job: JobRecord) -> asyncio.Task[None]:
        task = asyncio.create_task(self._run(job), name=f"imagine-job-{job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def recover(self) -> int:
        """Pick up every unfinished job, oldest first. Returns how many were resumed."""
        resumed = 0
        for job in await self._jobs.unfinished():
            if job.state is S.QUEUED and job.message_id is None:
                # The bot stopped before answering the interaction: the member saw it fail.
                await self._jobs.transition(job.id, S.FAILED, detail="never answered", outcome="not answered")
                continue
            log.info("resuming job %s from %s", job.id, job.state)
            self.start(job)
            resumed += 1
        return resumed

    async def close(self, grace: float = 0.0) -> None:
        """Stop taking jobs, give running ones `grace` seconds to finish, then pause the rest."""
        self.accepting = False
        if self._tasks and grace > 0:
            await asyncio.wait(set(self._tasks), timeout=grace)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _deadline(self, job: JobRecord) -> float:
        if job.submitted_at is None:
            remaining = self._timeout
        else:
            remaining = max(RESUME_MINIMUM, self._timeout - (time.time() - job.submitted_at))
        return asyncio.get_running_loop().time() + remaining

    async def _run(self, job: JobRecord) -> None:
        target = self._targets(job)
        progress: ProgressReporter | None = None
        try:
            async with self._slots:
                # The clock starts when the job leaves the queue (or when it was submitted, if resumed).
                since = datetime.fromtimestamp(job.submitted_at or time.time(), UTC)

                async def show(stage: Stage) -> None:
                    await target.edit(render.placeholder_embed(job.params, stage, since=since))

                progress = ProgressReporter(show, min_interval=self._progress_interval)
                job = await self._advance(job, target, progress)
        except asyncio.CancelledError:
            if progress is not None:
                await progress.close()
            await _last_edit(target.edit(render.paused_embed(job.params, prediction_id=job.prediction_id)))
            raise
        except Exception as error:
            if progress is not None:
                await progress.close()
            current = await self._jobs.get(job.id)
            if isinstance(error, WaveSpeedError):
                log.warning(
                    "job %s failed (prediction %s): %s: %s", job.id, current.prediction_id, type(error).__name__, error
                )
            else:
                log.exception("job %s failed (prediction %s)", job.id, current.prediction_id)
            await _last_edit(target.edit(render.failure_embed(job.params, error, prediction_id=current.prediction_id)))
            state = S.UNCONFIRMED if isinstance(error, UnconfirmedSubmitError) else S.FAILED
            outcome = type(error).__name__
            await self._jobs.transition(
                job.id, state, detail=str(error)[:200], outcome=outcome, finished_at=time.time()
            )

    async def _advance(self, job: JobRecord, target: Target, progress: ProgressReporter) -> JobRecord:
        if job.state is S.SUBMITTING:
            raise UnconfirmedSubmitError(f"job {job.id} was being submitted when the bot stopped")
        deadline = self._deadline(job)
        if job.state is S.QUEUED:
            job = await self._submit(job, deadline)
            progress.update(Stage.SUBMITTED)

        async def on_update(prediction: Prediction) -> None:
            progress.update(stage_for_status(prediction.status))

        assert job.prediction_id is not None
        prediction = await self._client.wait(job.prediction_id, deadline=deadline, on_update=on_update)
        if job.state is S.SUBMITTED:
            job = await self._jobs.transition(job.id, S.COMPLETED, inference_ms=prediction.inference_ms)
        outputs = await prepare_outputs(self._client, prediction, file_limit=job.file_limit)
        await progress.close()
        job = await self._jobs.transition(job.id, S.DELIVERING, detail=f"{len(outputs.files)} files")
        sent = await self._deliver(job, target, prediction, outputs)
        job = await self._jobs.transition(
            job.id,
            S.DELIVERED,
            result_message_id=sent.id if sent else None,
            finished_at=time.time(),
            outcome="delivered",
        )
        log.info("job %s delivered (prediction %s, %d files)", job.id, job.prediction_id, len(outputs.files))
        return job

    async def _submit(self, job: JobRecord, deadline: float) -> JobRecord:
        job = await self._jobs.transition(job.id, S.SUBMITTING)
        try:
            prediction_id = await self._client.submit(self._model, job.params.api_input(), deadline=deadline)
        except (ConnectionFailedError, MalformedResponseError) as error:
            # Sent, but no readable answer: the task may exist and be billed.
            if getattr(error, "sent", True):
                raise UnconfirmedSubmitError(str(error)) from None
            raise
        log.info("job %s submitted as prediction %s", job.id, prediction_id)
        return await self._jobs.transition(job.id, S.SUBMITTED, prediction_id=prediction_id, submitted_at=time.time())

    async def _deliver(
        self, job: JobRecord, target: Target, prediction: Prediction, outputs: PreparedOutputs
    ) -> discord.Message | None:
        try:
            sent = await target.deliver(render.result_embed(job.params, prediction, outputs), outputs)
        except discord.HTTPException as error:
            if error.status != 413 and error.code != 40005:
                raise
            # Discord refused the upload after all: deliver links instead of failing.
            log.warning("Discord refused the upload (%s); delivering links", error.code)
            outputs = outputs.without_files(prediction.output_urls)
            sent = await target.deliver(render.result_embed(job.params, prediction, outputs), outputs)
        if sent is not None:
            # The images are out: a placeholder that cannot point to them must not fail the job.
            await _last_edit(target.edit(render.delivered_elsewhere_embed(job.params, sent.jump_url)))
        return sent


async def _last_edit(edit: Awaitable[None]) -> None:
    """A final edit that must not raise or hang: the job is over either way."""
    try:
        async with asyncio.timeout(LAST_EDIT_TIMEOUT):
            await edit
    except (discord.HTTPException, TimeoutError, RuntimeError) as error:
        log.warning("could not update the placeholder: %s", error)
