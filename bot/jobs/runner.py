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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import discord

from bot import render
from bot.jobs.outputs import PreparedOutputs, prepare_outputs
from bot.jobs.progress import ProgressReporter, Stage, Status, stage_for_status
from bot.jobs.queue import FairQueue, LeftQueueError
from bot.jobs.store import InvalidTransitionError, JobRecord, JobState, JobStore
from bot.links import jump_url
from bot.wavespeed.client import WaveSpeedClient
from bot.wavespeed.errors import RateLimitedError, WaveSpeedError
from bot.wavespeed.models import Prediction

log = logging.getLogger(__name__)

S = JobState
# How long a last "paused" or "failed" edit may take before the bot gives up on it.
LAST_EDIT_TIMEOUT = 5.0
# Jobs downloading and uploading images at the same time (each holds up to four images in memory).
DELIVERY_CONCURRENCY = 16
# A job recovered after a restart, past its deadline, still gets this long to fetch a result that
# may be ready (the bot was down, not the job slow). Jobs of this run get exactly their timeout.
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

    async def edit(self, embed: discord.Embed, *, view: discord.ui.View | None = None) -> None: ...

    async def deliver(
        self,
        embed: discord.Embed,
        outputs: PreparedOutputs,
        *,
        view: discord.ui.View | None = None,
        private: tuple[discord.Embed, PreparedOutputs] | None = None,
    ) -> discord.Message | None: ...


@dataclass(frozen=True)
class Reviewed:
    """The outputs as the job's channel may receive them, and as a private message (a DM, never
    age-restricted) may: a delivery that falls back to a DM must not carry the channel's policy."""

    channel: PreparedOutputs
    private: PreparedOutputs


# The server's NSFW policy applied to the outputs, decided when they are posted.
Review = Callable[[JobRecord, PreparedOutputs], Awaitable[Reviewed]]
# Side effects once delivered (the moderation log): the job, the prediction, every output, the new message.
AfterDelivery = Callable[[JobRecord, Prediction, PreparedOutputs, "discord.Message | None"], Awaitable[None]]


@dataclass
class _Run:
    """One job while its task runs."""

    job: JobRecord
    target: Target
    progress: ProgressReporter
    since: datetime | None = None  # when it was submitted: the placeholder's clock
    holding: bool = False  # holds one of the queue's slots
    cancelled: bool = False  # by the member, while it waited
    resumed: bool = False  # picked up after a restart


class JobRunner:
    def __init__(
        self,
        client: WaveSpeedClient,
        jobs: JobStore,
        *,
        targets: Callable[[JobRecord], Target],
        model: str,
        edit_model: str = "wavespeed-ai/flux-kontext-pro",
        timeout: float,
        max_concurrent: int = 3,
        progress_interval: float = 1.5,
        waiting_view: Callable[[int], discord.ui.View | None] = lambda job_id: None,
        result_view: Callable[[int], discord.ui.View | None] = lambda job_id: None,
        review: Review | None = None,
        after_delivery: AfterDelivery | None = None,
        find_placeholder: Callable[[JobRecord], Awaitable[int | None]] | None = None,
        resume_minimum: float = RESUME_MINIMUM,
    ) -> None:
        self._client = client
        self._jobs = jobs
        self._targets = targets
        self._model = model
        self._edit_model = edit_model
        self._timeout = timeout
        self._progress_interval = progress_interval
        self._waiting_view = waiting_view
        self._result_view = result_view
        self._review = review
        self._after_delivery = after_delivery
        self._find_placeholder = find_placeholder
        self._resume_minimum = resume_minimum
        self.queue = FairQueue(max_concurrent, on_change=self._queue_changed)
        self._delivering = asyncio.Semaphore(DELIVERY_CONCURRENCY)
        self._runs: dict[int, _Run] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._positions_pending = False
        self._limited_streak = 0  # consecutive 429s on submit
        self.accepting = True

    @property
    def active(self) -> int:
        return len(self._tasks)

    def start(self, job: JobRecord, *, resumed: bool = False) -> asyncio.Task[None]:
        task = asyncio.create_task(self._run(job, resumed=resumed), name=f"imagine-job-{job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def recover(self) -> int:
        """Pick up every unfinished job, oldest first; the queue keeps its order. Returns how many."""
        unfinished = []
        for job in await self._jobs.unfinished():
            if job.state is S.QUEUED and job.message_id is None:
                # Stopped around answering the interaction: if the answer went out, it is the placeholder.
                found = await self._find_placeholder(job) if self._find_placeholder else None
                if found is None:  # never answered: the member saw "the application did not respond"
                    await self._jobs.transition(job.id, S.FAILED, detail="never answered", outcome="not answered")
                    continue
                job = await self._jobs.transition(job.id, S.QUEUED, detail="placeholder found", message_id=found)
            unfinished.append(job)
        self.queue.restore([j.queue_tag for j in unfinished if j.queue_tag is not None and j.state is S.QUEUED])
        for job in unfinished:
            log.info("resuming job %s from %s", job.id, job.state)
            self.start(job, resumed=True)
        return len(unfinished)

    async def cancel(self, job_id: int) -> JobRecord | None:
        """Take a waiting job out of the queue (nothing was sent). None if it has started or ended."""
        run = self._runs.get(job_id)
        if run is not None:
            if run.holding or run.job.state is not S.QUEUED:
                return None
            run.cancelled = True  # seen by its task before it could submit
            self.queue.remove(job_id)
            await run.progress.close()  # no position edit may land after the cancellation
        try:
            return await self._jobs.transition(job_id, S.CANCELLED, outcome="cancelled", finished_at=time.time())
        except InvalidTransitionError:
            return None

    async def close(self, grace: float = 0.0) -> None:
        """Stop taking jobs, give running ones `grace` seconds to finish, then pause the rest."""
        self.accepting = False
        if self._tasks and grace > 0:
            await asyncio.wait(set(self._tasks), timeout=grace)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _deadline(self, run: _Run) -> float:
        """When the job's time runs out, on the loop's clock: JOB_TIMEOUT_SECONDS after its submit."""
        job = run.job
        remaining = self._timeout if job.submitted_at is None else self._timeout - (time.time() - job.submitted_at)
        if run.resumed:
            remaining = max(self._resume_minimum, remaining)
        return asyncio.get_running_loop().time() + remaining

    async def _show(self, run: _Run, status: Status) -> None:
        view = self._waiting_view(run.job.id) if status.stage is Stage.QUEUED else None
        await run.target.edit(render.placeholder_embed(run.job.params, status, since=run.since), view=view)

    def _queue_changed(self) -> None:
        """Positions moved: refresh the waiting placeholders once per loop iteration, not per change."""
        if not self._positions_pending:
            self._positions_pending = True
            asyncio.get_running_loop().call_soon(self._show_positions)

    def _show_positions(self) -> None:
        self._positions_pending = False
        loop = asyncio.get_running_loop()
        resumes_at = time.time() + (self.queue.paused_until - loop.time()) if self.queue.paused else None
        for position, waiting in enumerate(self.queue.order(), start=1):
            run = self._runs.get(waiting.job_id)
            if run is not None:
                run.progress.update(Status.waiting(position, resumes_at))

    def _release(self, run: _Run) -> None:
        if run.holding:
            run.holding = False
            self.queue.release()

    async def _run(self, job: JobRecord, *, resumed: bool) -> None:
        target = self._targets(job)
        run = _Run(job, target, ProgressReporter(lambda s: self._show(run, s), min_interval=self._progress_interval))
        run.resumed = resumed
        if job.submitted_at is not None:
            run.since = datetime.fromtimestamp(job.submitted_at, UTC)
        self._runs[job.id] = run
        try:
            await self._advance(run)
        except LeftQueueError:
            log.info("job %s left the queue", job.id)  # cancelled: the button has answered already
            await run.progress.close()
        except InvalidTransitionError as error:
            # Expected only when a member cancelled before this task got going; anything else is a
            # bug, and the job must still end with a message rather than a stale placeholder.
            await run.progress.close()
            current = await self._jobs.get(job.id)
            if current.state is S.CANCELLED:
                log.info("job %s was cancelled before it started", job.id)
            elif current.finished:
                log.error("job %s: %s (already %s)", job.id, error, current.state)
            else:
                await self._fail(run, error)
        except asyncio.CancelledError:
            self.queue.remove(job.id)
            await run.progress.close()
            if run.job.state is S.SUBMITTING:  # stopped mid-submit (a sync one lasts the generation)
                await self._fail(run, UnconfirmedSubmitError("the bot stopped before WaveSpeed answered the submit"))
                raise
            view = self._waiting_view(job.id) if run.job.state is S.QUEUED else None
            paused = render.paused_embed(job.params, prediction_id=run.job.prediction_id)
            await _last_edit(target.edit(paused, view=view))
            raise
        except Exception as error:
            await run.progress.close()
            await self._fail(run, error)
        finally:
            self._release(run)
            self._runs.pop(job.id, None)

    async def _fail(self, run: _Run, error: Exception) -> None:
        job = run.job
        if isinstance(error, WaveSpeedError):
            name = type(error).__name__
            log.warning("job %s failed (prediction %s): %s: %s", job.id, job.prediction_id, name, error)
        else:
            log.exception("job %s failed (prediction %s)", job.id, job.prediction_id, exc_info=error)
        await _last_edit(run.target.edit(render.failure_embed(job.params, error, prediction_id=job.prediction_id)))
        state = S.UNCONFIRMED if isinstance(error, UnconfirmedSubmitError) else S.FAILED
        outcome = type(error).__name__
        await self._jobs.transition(job.id, state, detail=str(error)[:200], outcome=outcome, finished_at=time.time())

    async def _advance(self, run: _Run) -> None:
        if run.job.state is S.SUBMITTING:
            raise UnconfirmedSubmitError(f"job {run.job.id} was being submitted when the bot stopped")
        settled = None
        if run.job.state is S.QUEUED:
            settled = await self._queue_and_submit(run)
        else:  # resumed: it is running on WaveSpeed already
            self.queue.occupy()
            run.holding = True

        async def on_update(prediction: Prediction) -> None:
            run.progress.update(stage_for_status(prediction.status))

        assert run.job.prediction_id is not None
        deadline = self._deadline(run)
        if settled is not None:  # sync mode: the submit's answer was the result
            prediction = self._client.finished(settled)
        else:
            prediction = await self._client.wait(run.job.prediction_id, deadline=deadline, on_update=on_update)
        # Never more images than were asked for (each is billed), and only http(s) links.
        prediction = prediction.usable(run.job.params.num_images)
        self._release(run)  # WaveSpeed is done with it: the next job may start
        if run.job.state is S.SUBMITTED:
            run.job = await self._jobs.transition(run.job.id, S.COMPLETED, inference_ms=prediction.inference_ms)
        # Images are held in memory only here, for a bounded number of jobs at once: memory stays
        # flat however many jobs finish together.
        async with self._delivering:
            outputs = await prepare_outputs(self._client, prediction, file_limit=run.job.file_limit)
            # The server's NSFW policy for where the images land, decided now, not at admission.
            shown = await self._review(run.job, outputs) if self._review else Reviewed(outputs, outputs)
            await run.progress.close()
            run.job = await self._jobs.transition(run.job.id, S.DELIVERING, detail=f"{len(shown.channel.files)} files")
            sent = await self._deliver(run.job, run.target, prediction, shown)
            run.job = await self._jobs.transition(
                run.job.id,
                S.DELIVERED,
                result_message_id=sent.id if sent else None,
                finished_at=time.time(),
                outcome="delivered",
            )
            log.info(
                "job %s delivered (prediction %s, %d files)",
                run.job.id,
                run.job.prediction_id,
                len(shown.channel.files),
            )
            if self._after_delivery is not None:
                try:
                    await self._after_delivery(run.job, prediction, outputs, sent)
                except Exception:  # the images are out; a side effect must not turn that into a failure
                    log.exception("after-delivery step failed for job %s", run.job.id)

    async def _queue_and_submit(self, run: _Run) -> Prediction | None:
        """Wait for a turn, then submit. A 429 puts the job back at the head of the line. Returns
        the final prediction when the submit already brought it back (sync mode)."""
        limited_since: float | None = None
        while True:
            if run.job.queue_tag is None:
                tag = self.queue.tag_for(run.job.user_id)
                run.job = await self._jobs.transition(run.job.id, S.QUEUED, detail="enqueued", queue_tag=tag)
            assert run.job.queue_tag is not None
            if run.cancelled:
                raise LeftQueueError(run.job.id)
            await self.queue.add(run.job.id, run.job.user_id, run.job.queue_tag)
            run.holding = True
            if run.cancelled:  # pressed between its turn coming and this task waking up
                raise LeftQueueError(run.job.id)
            run.job = await self._jobs.transition(run.job.id, S.SUBMITTING)
            deadline = self._deadline(run)
            submitted_at = time.time()
            if self._client.sync_mode:  # the generation happens during this request
                run.since = datetime.fromtimestamp(submitted_at, UTC)
                run.progress.update(Stage.PROCESSING)
            try:
                model = self._edit_model if run.job.params.is_edit else self._model
                submitted = await self._client.submit(
                    model, run.job.params.api_input(), deadline=deadline, retry_rate_limits=False
                )
            except RateLimitedError as error:
                # WaveSpeed took nothing: back-pressure. Everyone waits; this job keeps its place.
                limited_since = limited_since or time.monotonic()
                self._release(run)
                run.job = await self._jobs.transition(run.job.id, S.QUEUED, detail="rate limited")
                if time.monotonic() - limited_since > self._timeout:
                    raise
                self._limited_streak += 1
                self.queue.pause(error.retry_after or min(60.0, 2.0**self._limited_streak))
                continue
            except WaveSpeedError as error:
                # Only a clear refusal (an auth error, a 4xx in WaveSpeed's own envelope, a request
                # never sent) proves no task exists. A 5xx, a timeout or an unreadable answer may
                # come from a task that was created and billed: never "try again" for those.
                if error.nothing_created:
                    raise
                log.warning("job %s: submit unconfirmed: %s", run.job.id, error)
                raise UnconfirmedSubmitError(str(error)) from None
            self._limited_streak = 0
            log.info("job %s submitted as prediction %s", run.job.id, submitted.id)
            run.job = await self._jobs.transition(
                run.job.id, S.SUBMITTED, prediction_id=submitted.id, submitted_at=submitted_at
            )
            run.since = datetime.fromtimestamp(submitted_at, UTC)
            settled = self._client.settled_on_submit(submitted)
            if settled is None:
                run.progress.update(stage_for_status(submitted.status))
            return settled

    async def _deliver(
        self, job: JobRecord, target: Target, prediction: Prediction, shown: Reviewed
    ) -> discord.Message | None:
        view = self._result_view(job.id)

        def rendered(outputs: PreparedOutputs) -> tuple[discord.Embed, PreparedOutputs]:
            return render.result_embed(job.params, prediction, outputs), outputs

        try:
            sent = await target.deliver(*rendered(shown.channel), view=view, private=rendered(shown.private))
        except discord.HTTPException as error:
            if error.status != 413 and error.code != 40005:
                raise
            # Discord refused the upload after all: deliver links instead of failing.
            log.warning("Discord refused the upload (%s); delivering links", error.code)
            links = Reviewed(*(o.without_files(prediction.output_urls) for o in (shown.channel, shown.private)))
            sent = await target.deliver(*rendered(links.channel), view=view, private=rendered(links.private))
        if sent is not None:
            # The images are out: a placeholder that cannot point to them must not fail the job.
            url = jump_url(sent, job.guild_id)
            await _last_edit(target.edit(render.delivered_elsewhere_embed(job.params, url)))
        return sent


async def _last_edit(edit: Awaitable[None]) -> None:
    """A final edit that must not raise or hang: the job is over either way."""
    try:
        async with asyncio.timeout(LAST_EDIT_TIMEOUT):
            await edit
    except (discord.HTTPException, TimeoutError, RuntimeError) as error:
        log.warning("could not update the placeholder: %s", error)
