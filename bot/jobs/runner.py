"""Runs one claimed job: submit, wait (poll, push or sync) with progress, fetch outputs, deliver.

Every step is a typed verb of the storage before or after the side effect it names, so any process
can pick a job up at any state after its owner died (`bot.jobs.dispatcher` adopts it). The rules
that keep that safe:
- the submit POST happens only from `submitting`, which the claim wrote first; a job adopted in
  `submitting` may have been billed and is never sent again (`unconfirmed`);
- a final edit happens before the terminal state is written: repeating it is harmless, losing it
  is not;
- at shutdown, running jobs are paused, not failed: their state stays and they resume.
The runner knows nothing of Discord: it tells a `Presenter` what happened.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from bot.jobs.events import Presenter, UnconfirmedSubmitError
from bot.jobs.foreground import Foreground
from bot.jobs.memory import MIB, ImageMemory
from bot.jobs.model import InvalidTransitionError, JobRecord, JobState
from bot.jobs.outputs import prepare_outputs
from bot.jobs.progress import ProgressReporter, Stage, Status, stage_for_status
from bot.logs import job_context
from bot.metrics import NOOP, Metrics, failure_reason
from bot.storage.base import QUEUE, Storage
from bot.wavespeed.client import WaveSpeedClient
from bot.wavespeed.errors import JobTimeoutError, RateLimitedError, WaveSpeedError
from bot.wavespeed.models import Prediction

log = logging.getLogger(__name__)

S = JobState
# A job adopted after a restart, past its deadline, still gets this long to fetch a result that
# may be ready (the bot was down, not the job slow). Jobs of this run get exactly their timeout.
RESUME_MINIMUM = 15.0


@dataclass
class _Run:
    """One job while its task runs."""

    job: JobRecord
    progress: ProgressReporter
    resumed: bool  # adopted (after a restart or another process's death), not claimed just now
    since: datetime | None = None  # when it was submitted: the placeholder's clock


class JobRunner:
    def __init__(
        self,
        client: WaveSpeedClient,
        storage: Storage,
        presenter: Presenter,
        *,
        model: str,
        edit_model: str = "wavespeed-ai/flux-kontext-pro",
        multi_model: str = "wavespeed-ai/flux-kontext-pro/multi",
        timeout: float,
        progress_interval: float = 1.5,
        resume_minimum: float = RESUME_MINIMUM,
        foreground: Foreground | None = None,
        delivery_memory: int = 64 * MIB,
        metrics: Metrics = NOOP,
    ) -> None:
        self._client = client
        self._metrics = metrics
        self._storage = storage
        self._presenter = presenter
        self._model = model
        self._edit_model = edit_model
        self._multi_model = multi_model
        self._timeout = timeout
        self._progress_interval = progress_interval
        self._resume_minimum = resume_minimum
        self._foreground = foreground or Foreground(max_wait=0.0)
        # Progress edits are cosmetic: they wait while commands are answered or results delivered.
        self._wait_turn = functools.partial(self._foreground.quiet, deliveries=True)
        self._memory = ImageMemory(delivery_memory)  # images held at once while delivering, in bytes
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._limited_since: dict[int, float] = {}  # job id -> first 429 on its submit (monotonic)
        self._limited_streak = 0  # consecutive 429s on submit, for the pause when no Retry-After
        self.accepting = True

    @property
    def active(self) -> int:
        return len(self._tasks)

    def running(self, job_id: int) -> bool:
        return job_id in self._tasks

    def start(self, job: JobRecord, *, resumed: bool = False) -> asyncio.Task[None]:
        """Run a job this process owns: claimed now (`submitting`), or adopted at any state."""
        task = asyncio.create_task(self._run(job, resumed=resumed), name=f"imagine-job-{job.id}")
        self._tasks[job.id] = task
        task.add_done_callback(lambda _: self._tasks.pop(job.id, None))
        return task

    def reporter(self, job: JobRecord, *, since: datetime | None = None) -> ProgressReporter:
        """Coalesced placeholder updates for one job, at most one per progress interval."""
        return ProgressReporter(
            lambda status: self._presenter.show(job, status, since=since),
            min_interval=self._progress_interval,
            wait_turn=self._wait_turn,
        )

    async def close(self, grace: float = 0.0) -> None:
        """Stop taking jobs, give running ones `grace` seconds to finish, then pause the rest."""
        self.accepting = False
        tasks = set(self._tasks.values())
        if tasks and grace > 0:
            await asyncio.wait(tasks, timeout=grace)
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    def _deadline(self, run: _Run) -> float:
        """When the job's time runs out, on the loop's clock: JOB_TIMEOUT_SECONDS after its submit."""
        job = run.job
        remaining = self._timeout if job.submitted_at is None else self._timeout - (time.time() - job.submitted_at)
        if run.resumed:
            remaining = max(self._resume_minimum, remaining)
        return asyncio.get_running_loop().time() + remaining

    async def _run(self, job: JobRecord, *, resumed: bool) -> None:
        job_context(job_id=job.id, guild_id=job.guild_id, prediction_id=job.prediction_id)  # this task's log lines
        since = datetime.fromtimestamp(job.submitted_at, UTC) if job.submitted_at is not None else None
        progress = ProgressReporter(
            lambda s: self._show(run, s), min_interval=self._progress_interval, wait_turn=self._wait_turn
        )
        run = _Run(job, progress, resumed)
        run.since = since
        try:
            await self._advance(run)
        except InvalidTransitionError as error:
            # Another process or a member moved the job meanwhile (cancelled it, or it ended): the
            # job must still end with a message unless it already has.
            await run.progress.close()
            current = await self._storage.get_job(job.id)
            if current.finished:
                log.info("job %s: %s (already %s)", job.id, error, current.state)
            else:
                await self._fail(run, error)
        except asyncio.CancelledError:
            await run.progress.close()
            if run.job.state is S.SUBMITTING:  # stopped mid-submit (a sync one lasts the generation)
                await self._fail(run, UnconfirmedSubmitError("the bot stopped before WaveSpeed answered the submit"))
                raise
            if run.job.state is not S.QUEUED:
                await self._presenter.paused(run.job)
            raise
        except Exception as error:
            await run.progress.close()
            await self._fail(run, error)

    async def _show(self, run: _Run, status: Status) -> None:
        await self._presenter.show(run.job, status, since=run.since)

    async def _fail(self, run: _Run, error: BaseException) -> None:
        job = run.job
        self._limited_since.pop(job.id, None)
        if isinstance(error, WaveSpeedError):
            name = type(error).__name__
            log.warning("job %s failed (prediction %s): %s: %s", job.id, job.prediction_id, name, error)
        else:
            log.error("job %s failed (prediction %s)", job.id, job.prediction_id, exc_info=error)
        await self._presenter.failed(job, error)
        unconfirmed = isinstance(error, UnconfirmedSubmitError)
        await self._storage.fail(
            job.id, outcome=type(error).__name__, detail=str(error), finished_at=time.time(), unconfirmed=unconfirmed
        )
        if unconfirmed or isinstance(error, JobTimeoutError):
            self._metrics.job_finished("unconfirmed" if unconfirmed else "timeout")
        else:
            self._metrics.job_finished("failed", failure_reason(error))
        await self._storage.notify(QUEUE)  # a slot may have come free

    async def _advance(self, run: _Run) -> None:
        settled = None
        if run.job.state is S.SUBMITTING:
            if run.resumed:
                raise UnconfirmedSubmitError(f"job {run.job.id} was being submitted when its process stopped")
            submitted = await self._submit(run)
            if submitted is None:  # rate limited: back in line
                return
            settled = self._client.settled_on_submit(submitted)

        async def on_update(prediction: Prediction) -> None:
            run.progress.update(stage_for_status(prediction.status))

        assert run.job.prediction_id is not None
        if self._client.webhook_url and run.job.state is S.SUBMITTED:
            # Pushes reach any process and wait in the database: one may have come before this
            # process was listening for it (just submitted, or adopted from a process that died).
            self._client.expect(run.job.prediction_id)
            if (body := await self._storage.pushed(run.job.prediction_id)) is not None:
                self._client.push(Prediction.model_validate_json(body))
        if settled is not None:  # sync mode: the submit's answer was the result
            prediction = self._client.finished(settled)
        else:  # polled (or pushed); a job adopted after it finished gets its result at the first poll
            deadline = self._deadline(run)
            # A job adopted (after a restart, or from a process that died) has been running a while.
            running_for = time.time() - run.job.submitted_at if run.resumed and run.job.submitted_at else 0.0
            prediction = await self._client.wait(
                run.job.prediction_id, deadline=deadline, on_update=on_update, running_for=max(0.0, running_for)
            )
        if run.job.state is S.SUBMITTED and run.job.submitted_at is not None:  # once per job, not on a retry
            self._metrics.generated(time.time() - run.job.submitted_at)
            billed = prediction.nsfw_flags()[: run.job.params.num_images]  # extra outputs are neither fetched nor paid
            self._metrics.images(len(billed), sum(billed))
        finished_at = time.monotonic()
        # Never more images than were asked for (each is billed), and only http(s) links.
        prediction = prediction.usable(run.job.params.num_images)
        if run.job.state is S.SUBMITTED:
            run.job = await self._storage.mark_completed(run.job.id, inference_ms=prediction.inference_ms)
            await self._storage.notify(QUEUE)  # WaveSpeed is done with it: the next job may start
        # Images are held in memory only here, within a budget of bytes: memory stays flat however
        # many jobs finish together.
        with self._foreground.deliver():
            await self._deliver(run, prediction, finished_at)

    async def _deliver(self, run: _Run, prediction: Prediction, finished_at: float) -> None:
        async with self._memory.share(len(prediction.output_urls)) as share:
            outputs = await prepare_outputs(self._client, prediction, file_limit=run.job.file_limit)
            share.settle([len(file.data) for file in outputs.files])
            await run.progress.close()
            run.job = await self._storage.mark_delivering(run.job.id, detail=f"{len(outputs.files)} files")
            where = await self._presenter.deliver(run.job, prediction, outputs)
            run.job = await self._storage.mark_delivered(
                run.job.id, result_message_id=where.result_message_id, finished_at=time.time()
            )
            self._metrics.delivered(time.monotonic() - finished_at, where.route)
            self._metrics.job_finished("delivered")
            log.info(
                "job %s delivered (prediction %s, %d files)", run.job.id, run.job.prediction_id, len(outputs.files)
            )
            try:
                await self._presenter.delivered(run.job, prediction, outputs, where)
            except Exception:  # the images are out; a side effect must not turn that into a failure
                log.exception("after-delivery step failed for job %s", run.job.id)

    async def _submit(self, run: _Run) -> Prediction | None:
        """POST the job (it is `submitting`). A 429 puts it back in line and pauses every process's
        submits; returns None then. Returns WaveSpeed's answer otherwise."""
        deadline = self._deadline(run)
        submitted_at = time.time()
        if self._client.sync_mode:  # the generation happens during this request
            run.since = datetime.fromtimestamp(submitted_at, UTC)
            run.progress.update(Stage.PROCESSING)
        try:
            params = run.job.params
            model = self._multi_model if params.is_multi else self._edit_model if params.is_edit else self._model
            submitted = await self._client.submit(
                model, run.job.params.api_input(), deadline=deadline, retry_rate_limits=False
            )
        except RateLimitedError as error:
            # WaveSpeed took nothing: back-pressure. Everyone waits; this job keeps its place.
            first = self._limited_since.setdefault(run.job.id, time.monotonic())
            if time.monotonic() - first > self._timeout:
                raise
            self._limited_streak += 1
            await self._storage.pause_submits(error.retry_after or min(60.0, 2.0**self._limited_streak))
            run.job = await self._storage.requeue(run.job.id)
            await self._storage.notify(QUEUE)
            return None
        except WaveSpeedError as error:
            # Only a clear refusal (an auth error, a 4xx in WaveSpeed's own envelope, a request
            # never sent) proves no task exists. A 5xx, a timeout or an unreadable answer may
            # come from a task that was created and billed: never "try again" for those.
            if error.nothing_created:
                raise
            log.warning("job %s: submit unconfirmed: %s", run.job.id, error)
            raise UnconfirmedSubmitError(str(error)) from None
        self._limited_streak = 0
        self._limited_since.pop(run.job.id, None)
        job_context(job_id=run.job.id, guild_id=run.job.guild_id, prediction_id=submitted.id)
        log.info("job %s submitted as prediction %s", run.job.id, submitted.id)
        self._metrics.queue_waited(submitted_at - run.job.created_at)
        run.job = await self._storage.mark_submitted(run.job.id, prediction_id=submitted.id, submitted_at=submitted_at)
        run.since = datetime.fromtimestamp(submitted_at, UTC)
        if self._client.settled_on_submit(submitted) is None:
            run.progress.update(stage_for_status(submitted.status))
        return submitted
