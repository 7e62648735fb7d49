"""The job engine's edge cases, directly: which submit answers prove nothing was created, what a
prediction may hand on, and how long a job waits. The runner drives the real WaveSpeed client
against the fake WaveSpeed and the real job store; only the Discord side is a recording target
(the engine's own seam), so each case costs milliseconds instead of an end-to-end run."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime

import aiohttp
import pytest
from pydantic import SecretStr

from bot.jobs.events import Delivered
from bot.jobs.model import JobRecord, JobState
from bot.jobs.outputs import PreparedOutputs
from bot.jobs.progress import Status
from bot.jobs.runner import JobRunner
from bot.storage import open_storage
from bot.wavespeed.client import WaveSpeedClient
from bot.wavespeed.errors import OutputError, WaveSpeedError
from bot.wavespeed.models import Prediction
from tests.fakes.wavespeed import Scenario
from tests.test_job_store import new_job

MODEL = "wavespeed-ai/flux-kontext-pro/text-to-image"
INPUT = {"prompt": "a red kite", "num_images": 1, "seed": 7}


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


def deadline_in(seconds: float) -> float:
    return asyncio.get_running_loop().time() + seconds


# -- which submit failures prove that no task exists ----------------------------------------------


@pytest.mark.parametrize(
    ("answer", "nothing_created"),
    [
        (401, True),  # the key was refused
        (429, True),  # rate limited: not taken
        (400, True),  # refused in WaveSpeed's own envelope, with its code
        (422, True),
        (502, False),  # a 5xx after sending: it may exist and be billed
        (500, False),
        ("html", False),  # a proxy's error page: proves nothing
        ("envelope-error", False),  # HTTP 200, envelope code 500
        ("malformed", False),
        ("accept-then-hang", False),  # sent, never answered
    ],
)
async def test_submit_failures_say_whether_a_task_may_exist(session, wavespeed, answer, nothing_created):
    wavespeed.scenario = Scenario(submit_responses=[answer])
    client = WaveSpeedClient(session, api_key=SecretStr(wavespeed.api_key), base_url=wavespeed.base_url)
    with pytest.raises(WaveSpeedError) as raised:
        await client.submit(MODEL, INPUT, deadline=deadline_in(1.0), retry_rate_limits=False)
    assert raised.value.nothing_created is nothing_created


async def test_a_connection_refused_before_sending_created_nothing(session):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = WaveSpeedClient(session, api_key=SecretStr("k" * 20), base_url=f"http://127.0.0.1:{port}")
    with pytest.raises(WaveSpeedError) as raised:
        await client.submit(MODEL, INPUT, deadline=deadline_in(0.3))
    assert raised.value.nothing_created is True


# -- what a finished prediction may hand on -------------------------------------------------------


def prediction(outputs: list[str], flags: list[bool | None] | None) -> Prediction:
    return Prediction(id="p1", status="completed", outputs=outputs, has_nsfw_contents=flags)


def test_usable_keeps_at_most_what_was_asked_with_each_outputs_own_flag():
    got = prediction(["https://a/1", "https://a/2", "https://a/3"], [False, True, False]).usable(2)
    assert got.output_urls == ["https://a/1", "https://a/2"] and got.nsfw_flags() == [False, True]


def test_usable_drops_links_that_are_not_http_and_keeps_flags_aligned():
    got = prediction(["file:///etc/passwd", "HTTPS://a/2", "javascript:x", "http://a/4"], [False, True, False]).usable(
        4
    )
    # The fourth output had no flag: it counts as flagged, and stays so after the others are dropped.
    assert got.output_urls == ["HTTPS://a/2", "http://a/4"] and got.nsfw_flags() == [True, True]


def test_usable_with_no_usable_link_is_an_output_error():
    with pytest.raises(OutputError):
        prediction(["data:image/png;base64,AAAA"], [False]).usable(1)


def test_usable_returns_the_same_prediction_when_nothing_changes():
    same = prediction(["https://a/1"], [False])
    assert same.usable(4) is same


# -- how long a job waits ---------------------------------------------------------------------------


@dataclass
class RecordingPresenter:
    """The engine's one seam to Discord: records what it was told, and when."""

    shown: list[tuple[float, str]] = field(default_factory=list)
    failures: list[BaseException] = field(default_factory=list)
    final: asyncio.Event = field(default_factory=asyncio.Event)

    async def show(self, job: JobRecord, status: Status, *, since: datetime | None) -> None:
        self.shown.append((time.monotonic(), status.stage.value))

    async def deliver(self, job: JobRecord, prediction: Prediction, outputs: PreparedOutputs) -> Delivered:
        self.final.set()
        return Delivered(None)

    async def delivered(
        self, job: JobRecord, prediction: Prediction, outputs: PreparedOutputs, where: Delivered
    ) -> None:
        pass

    async def failed(self, job: JobRecord, error: BaseException) -> None:
        self.failures.append(error)
        self.final.set()

    async def paused(self, job: JobRecord) -> None:
        pass

    async def find_placeholder(self, job: JobRecord) -> int | None:
        return None


@pytest.mark.parametrize(("resumed", "expected"), [(False, 0.0), (True, 0.6)])
async def test_only_a_resumed_job_gets_time_past_its_deadline(session, wavespeed, database_url, resumed, expected):
    """A job of this run gets exactly its timeout from its submit; one resumed after a restart,
    already past its deadline, gets `resume_minimum` more to fetch a result that may be ready."""
    wavespeed.scenario = Scenario(inference_seconds=60)
    client = WaveSpeedClient(session, api_key=SecretStr(wavespeed.api_key), base_url=wavespeed.base_url)
    submitted = await client.submit(MODEL, INPUT, deadline=deadline_in(5))
    presenter = RecordingPresenter()
    async with contextlib.aclosing(await open_storage(database_url)) as storage:
        job = await storage.create_job(new_job(1))
        await storage.record_placeholder(job.id, 9)
        await storage.claim_next(capacity=1)
        # Submitted 100 s ago with a 1 s timeout: its deadline passed long before this run.
        job = await storage.mark_submitted(job.id, prediction_id=submitted.id, submitted_at=time.time() - 100)
        runner = JobRunner(
            client, storage, presenter, model=MODEL, timeout=1.0, resume_minimum=0.6, progress_interval=0.05
        )
        started = time.monotonic()
        await asyncio.wait_for(runner.start(job, resumed=resumed), 5)
        waited = time.monotonic() - started
        assert (await storage.get_job(job.id)).state is JobState.FAILED
    assert expected <= waited <= expected + 0.5, f"waited {waited:.2f} s, expected about {expected} s"
    assert [type(e).__name__ for e in presenter.failures] == ["JobTimeoutError"]
