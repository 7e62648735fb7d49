"""The WaveSpeed client against the fake API: billing safety, retries, deadlines, downloads."""

from __future__ import annotations

import asyncio
import itertools
import random
import socket

import aiohttp
import pytest
from pydantic import SecretStr

from bot.wavespeed.client import OutputTooLargeError, WaveSpeedClient
from bot.wavespeed.errors import (
    AuthenticationError,
    ConnectionFailedError,
    InvalidRequestError,
    JobTimeoutError,
    MalformedResponseError,
    PredictionFailedError,
    RateLimitedError,
    RequestTimeoutError,
    ServerError,
)
from bot.wavespeed.schedule import FLOOR, MIN_SAMPLES
from tests.fakes.wavespeed import FakeWaveSpeed, Scenario

MODEL = "wavespeed-ai/flux-kontext-pro/text-to-image"
INPUT = {"prompt": "a red kite", "num_images": 1, "seed": 7}


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


def client_for(session, base_url: str, key: str, **kwargs) -> WaveSpeedClient:
    return WaveSpeedClient(session, api_key=SecretStr(key), base_url=base_url, poll_interval=0.25, **kwargs)


def deadline_in(seconds: float) -> float:
    return asyncio.get_running_loop().time() + seconds


async def test_submit_wait_and_download(session, wavespeed: FakeWaveSpeed):
    client = client_for(session, wavespeed.base_url, wavespeed.api_key)
    seen: list[str] = []

    async def on_update(prediction):
        seen.append(prediction.status)

    prediction_id = (await client.submit(MODEL, INPUT, deadline=deadline_in(10))).id
    prediction = await client.wait(prediction_id, deadline=deadline_in(10), on_update=on_update)
    assert prediction.is_completed and len(prediction.output_urls) == 1
    assert seen[-1] == "completed" and len(seen) == len(set(seen))  # each change reported once
    download = await client.download(prediction.output_urls[0], max_bytes=10_000_000)
    assert download.extension == "png" and download.data.startswith(b"\x89PNG")
    assert wavespeed.requests[0].headers["Authorization"] == f"Bearer {wavespeed.api_key}"


@pytest.mark.parametrize(
    ("scripted", "error"),
    [
        (401, AuthenticationError),
        (403, AuthenticationError),
        (400, InvalidRequestError),
        (500, ServerError),
        (502, ServerError),
        ("html", ServerError),
        ("envelope-error", ServerError),
        ("malformed", MalformedResponseError),
        ("reset", ConnectionFailedError),
    ],
)
async def test_submit_errors_are_typed_and_never_retried(session, wavespeed, scripted, error):
    wavespeed.scenario = Scenario(submit_responses=[scripted])
    client = client_for(session, wavespeed.base_url, wavespeed.api_key)
    with pytest.raises(error) as raised:
        await client.submit(MODEL, INPUT, deadline=deadline_in(10))
    assert len(wavespeed.submits()) == 1  # the task may exist: sending again could bill twice
    assert wavespeed.api_key not in str(raised.value) and wavespeed.api_key not in repr(raised.value.args)
    if isinstance(raised.value, ConnectionFailedError):
        assert raised.value.sent


async def test_submit_timeout_is_not_retried(session, wavespeed):
    wavespeed.scenario = Scenario(submit_responses=["accept-then-hang"])
    client = client_for(session, wavespeed.base_url, wavespeed.api_key, request_timeout=0.5)
    with pytest.raises(RequestTimeoutError) as raised:
        await client.submit(MODEL, INPUT, deadline=deadline_in(10))
    assert raised.value.sent and len(wavespeed.submits()) == 1 and len(wavespeed.accepted_submits()) == 1


async def test_submit_429_is_retried_after_retry_after(session, wavespeed):
    wavespeed.scenario = Scenario(submit_responses=[429, 429], retry_after=0.3)
    client = client_for(session, wavespeed.base_url, wavespeed.api_key)
    assert await client.submit(MODEL, INPUT, deadline=deadline_in(10))
    first, second, third = wavespeed.submits()
    assert (first.status, second.status, third.status) == (429, 429, 200)
    assert second.at - first.at >= 0.3 and third.at - second.at >= 0.3


async def test_submit_429_gives_up_at_the_deadline(session, wavespeed):
    wavespeed.scenario = Scenario(submit_responses=[429] * 10, retry_after=5)
    client = client_for(session, wavespeed.base_url, wavespeed.api_key)
    with pytest.raises(RateLimitedError) as raised:
        await client.submit(MODEL, INPUT, deadline=deadline_in(1))
    assert raised.value.retry_after == 5 and len(wavespeed.submits()) == 1


async def test_submit_is_retried_when_the_connection_was_refused(session, wavespeed):
    with socket.socket() as probe:  # a port with nothing listening: refused before anything is sent
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    client = client_for(session, f"http://127.0.0.1:{closed_port}", wavespeed.api_key)
    with pytest.raises(ConnectionFailedError) as raised:
        await client.submit(MODEL, INPUT, deadline=deadline_in(1.5))
    assert not raised.value.sent and client.calls["submit"] >= 2


async def test_polls_survive_transient_errors(session, wavespeed):
    wavespeed.scenario = Scenario(result_responses=[429, 503, "malformed", "reset", 500], retry_after=0.1)
    client = client_for(session, wavespeed.base_url, wavespeed.api_key, max_backoff=0.2)
    prediction_id = (await client.submit(MODEL, INPUT, deadline=deadline_in(10))).id
    prediction = await client.wait(prediction_id, deadline=deadline_in(15))
    assert prediction.is_completed
    assert [r.status for r in wavespeed.result_polls()][:3] == [429, 503, 200]


async def test_poll_401_fails_at_once(session, wavespeed):
    wavespeed.scenario = Scenario(result_responses=[401])
    client = client_for(session, wavespeed.base_url, wavespeed.api_key)
    prediction_id = (await client.submit(MODEL, INPUT, deadline=deadline_in(10))).id
    with pytest.raises(AuthenticationError) as raised:
        await client.wait(prediction_id, deadline=deadline_in(10))
    assert raised.value.prediction_id == prediction_id and len(wavespeed.result_polls()) == 1


@pytest.mark.parametrize("status", ["failed", "cancelled", "timeout", "deleted"])
async def test_final_failure_statuses(session, wavespeed, status):
    wavespeed.scenario = Scenario(final_status=status, error="it broke", error_code=5000)
    client = client_for(session, wavespeed.base_url, wavespeed.api_key)
    prediction_id = (await client.submit(MODEL, INPUT, deadline=deadline_in(10))).id
    with pytest.raises(PredictionFailedError) as raised:
        await client.wait(prediction_id, deadline=deadline_in(10))
    assert (raised.value.status, raised.value.code, str(raised.value)) == (status, 5000, "it broke")
    assert raised.value.prediction_id == prediction_id and raised.value.retryable


async def test_unknown_status_is_polled_only_until_the_deadline(session, wavespeed):
    wavespeed.scenario = Scenario(final_status="mystery")
    client = client_for(session, wavespeed.base_url, wavespeed.api_key)
    prediction_id = (await client.submit(MODEL, INPUT, deadline=deadline_in(10))).id
    with pytest.raises(JobTimeoutError):
        await client.wait(prediction_id, deadline=deadline_in(1))


async def test_download_cap_and_content_type_fallback(session, wavespeed):
    wavespeed.scenario = Scenario(
        image_size=(300, 300), image_noise=True, image_content_type="application/octet-stream"
    )
    client = client_for(session, wavespeed.base_url, wavespeed.api_key)
    prediction_id = (await client.submit(MODEL, INPUT, deadline=deadline_in(10))).id
    url = (await client.wait(prediction_id, deadline=deadline_in(10))).output_urls[0]
    with pytest.raises(OutputTooLargeError):
        await client.download(url, max_bytes=10_000)
    download = await client.download(url, max_bytes=10_000_000)
    assert download.extension == "png"  # from the bytes, not the misleading Content-Type


# -- the poll schedule, driven by the client (its math: tests/test_poll_schedule.py) --------------


def teach(client: WaveSpeedClient, lo: float, hi: float, count: int = MIN_SAMPLES) -> None:
    """`count` completions spread evenly over lo-hi seconds, as if seen by earlier polls."""
    step = (hi - lo) / count
    for i in range(count):
        client.schedule.observe(lo + i * step, lo + (i + 1) * step)


class InPhase(random.Random):
    """Every prediction takes its plan as learned, at phase 0 (and every backoff its shortest)."""

    def random(self) -> float:
        return 0.0


async def test_polls_follow_the_learned_plan_from_the_submit(session, wavespeed):
    wavespeed.scenario = Scenario(queue_seconds=0.0, inference_seconds=2.2)
    client = client_for(session, wavespeed.base_url, wavespeed.api_key, rng=InPhase())
    teach(client, 1.0, 6.5)  # elevenths of 1-6.5 s (one prediction in flight): a poll every 0.5 s from 1.5 s
    prediction_id = (await client.submit(MODEL, INPUT, deadline=deadline_in(10))).id
    await asyncio.sleep(0.3)  # the job's bookkeeping between submit and wait: the plan counts from the submit
    await client.wait(prediction_id, deadline=deadline_in(10))
    created = wavespeed.predictions[prediction_id].created_at
    offsets = [r.at - created for r in wavespeed.result_polls(prediction_id)]
    assert len(offsets) == 3, offsets  # 1.5 s and 2.0 s saw it running, 2.5 s saw it done
    assert all(offset >= planned for offset, planned in zip(offsets, [1.5, 2.0, 2.5], strict=True)), offsets
    assert offsets[0] < 1.5 + 0.25, offsets  # not 0.3 s late: counted from the submit, not from the wait
    running_at, finished_at = client.schedule.samples[-1]  # what this one taught: finished in (2.0, 2.5]
    assert 2.0 <= running_at < 2.2 < 2.5 <= finished_at


async def test_predictions_submitted_together_are_not_polled_in_step(session, wavespeed):
    wavespeed.scenario = Scenario(queue_seconds=0.0, inference_seconds=0.0)
    client = client_for(session, wavespeed.base_url, wavespeed.api_key, rng=random.Random(3))
    teach(client, 1.0, 6.5)  # the first point at 1.5 s, the next 0.5 s later (elevenths: few in flight)
    ids = [(await client.submit(MODEL, INPUT, deadline=deadline_in(10))).id for _ in range(8)]
    await asyncio.gather(*(client.wait(i, deadline=deadline_in(10)) for i in ids))
    firsts = [wavespeed.result_polls(i)[0].at - wavespeed.predictions[i].created_at for i in ids]
    # Phases spread over 0.41 s of the 0.5 s gap (this seed); in step, within a few milliseconds.
    assert all(first >= 1.5 for first in firsts) and max(firsts) - min(firsts) > 0.3, firsts


async def test_a_prediction_picked_up_late_is_polled_at_once(session, wavespeed):
    wavespeed.scenario = Scenario(queue_seconds=0.0, inference_seconds=0.0)  # it finished while nobody watched
    client = client_for(session, wavespeed.base_url, wavespeed.api_key, first_poll=5.0)
    prediction_id = (await client.submit(MODEL, INPUT, deadline=deadline_in(10))).id
    began = asyncio.get_running_loop().time()
    await client.wait(prediction_id, deadline=deadline_in(10), running_for=6.0)  # past the first poll
    polls = wavespeed.result_polls(prediction_id)
    assert len(polls) == 1 and polls[0].at - began < 2.5  # at once, not 5 s in
    assert not client.schedule.samples  # when it finished is unknown: nothing learned


async def test_retried_polls_keep_the_floor(session, wavespeed):
    wavespeed.scenario = Scenario(result_responses=[429, 429, 503], retry_after=0.0)
    client = client_for(session, wavespeed.base_url, wavespeed.api_key, max_backoff=0.01)
    prediction_id = (await client.submit(MODEL, INPUT, deadline=deadline_in(10))).id
    await client.wait(prediction_id, deadline=deadline_in(10))
    sent = [r.at for r in wavespeed.result_polls(prediction_id)]
    assert len(sent) >= 4 and min(b - a for a, b in itertools.pairwise(sent)) >= FLOOR - 0.01
