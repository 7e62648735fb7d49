"""Runs `/imagine` jobs: submit, poll with progress, fetch outputs, deliver. Every task is tracked."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Protocol

import discord

from bot import render
from bot.jobs.outputs import DEFAULT_FILE_LIMIT, PreparedOutputs, prepare_outputs
from bot.jobs.progress import ProgressReporter, Stage, stage_for_status
from bot.params import ImagineParams
from bot.wavespeed.client import WaveSpeedClient
from bot.wavespeed.errors import ConnectionFailedError, MalformedResponseError, WaveSpeedError
from bot.wavespeed.models import Prediction

log = logging.getLogger(__name__)

# How long a last "interrupted" or "failed" edit may take before the bot gives up on it.
LAST_EDIT_TIMEOUT = 5.0


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


@dataclass
class Job:
    params: ImagineParams
    target: Target
    file_limit: int = DEFAULT_FILE_LIMIT


class JobRunner:
    def __init__(
        self,
        client: WaveSpeedClient,
        *,
        model: str,
        timeout: float,
        progress_interval: float = 1.5,
    ) -> None:
        self._client = client
        self._model = model
        self._timeout = timeout
        self._progress_interval = progress_interval
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def active(self) -> int:
        return len(self._tasks)

    def start(self, job: Job) -> asyncio.Task[None]:
        task = asyncio.create_task(self._run(job), name=f"imagine-job-{job.params.seed}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self, grace: float = 0.0) -> None:
        """Give running jobs `grace` seconds to finish, then cancel the rest and wait for them."""
        if not self._tasks:
            return
        if grace > 0:
            await asyncio.wait(set(self._tasks), timeout=grace)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(self, job: Job) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        started = discord.utils.utcnow()
        prediction_id: str | None = None

        async def show(stage: Stage) -> None:
            await job.target.edit(render.placeholder_embed(job.params, stage, since=started))

        progress = ProgressReporter(show, min_interval=self._progress_interval)

        async def on_update(prediction: Prediction) -> None:
            progress.update(stage_for_status(prediction.status))

        try:
            try:
                prediction_id = await self._client.submit(self._model, job.params.api_input(), deadline=deadline)
            except (ConnectionFailedError, MalformedResponseError) as error:
                # Sent, but no readable answer: the task may exist and be billed.
                if getattr(error, "sent", True):
                    raise UnconfirmedSubmitError(str(error)) from None
                raise
            log.info("job submitted as prediction %s", prediction_id)
            started = discord.utils.utcnow()
            progress.update(Stage.SUBMITTED)
            prediction = await self._client.wait(prediction_id, deadline=deadline, on_update=on_update)
            outputs = await prepare_outputs(self._client, prediction, file_limit=job.file_limit)
            await progress.close()
            await self._deliver(job, prediction, outputs)
            log.info("prediction %s delivered (%d files)", prediction_id, len(outputs.files))
        except asyncio.CancelledError:
            await progress.close()
            await _last_edit(job.target.edit(render.interrupted_embed(job.params, prediction_id=prediction_id)))
            raise
        except Exception as error:
            await progress.close()
            if isinstance(error, WaveSpeedError):
                log.warning("job failed (prediction %s): %s: %s", prediction_id, type(error).__name__, error)
            else:
                log.exception("job failed (prediction %s)", prediction_id)
            failed = render.failure_embed(job.params, error, prediction_id=prediction_id)
            await _last_edit(job.target.edit(failed))

    async def _deliver(self, job: Job, prediction: Prediction, outputs: PreparedOutputs) -> None:
        try:
            sent = await job.target.deliver(render.result_embed(job.params, prediction, outputs), outputs)
        except discord.HTTPException as error:
            if error.status != 413 and error.code != 40005:
                raise
            # Discord refused the upload after all: deliver links instead of failing.
            log.warning("Discord refused the upload (%s); delivering links", error.code)
            outputs = outputs.without_files(prediction.output_urls)
            sent = await job.target.deliver(render.result_embed(job.params, prediction, outputs), outputs)
        if sent is not None:
            await job.target.edit(render.delivered_elsewhere_embed(job.params, sent.jump_url))


async def _last_edit(edit: Awaitable[None]) -> None:
    """A final edit that must not raise or hang: the job is over either way."""
    try:
        async with asyncio.timeout(LAST_EDIT_TIMEOUT):
            await edit
    except (discord.HTTPException, TimeoutError, RuntimeError) as error:
        log.warning("could not update the placeholder: %s", error)
