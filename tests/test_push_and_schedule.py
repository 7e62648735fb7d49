"""Push (WaveSpeed's webhook) and the learned poll schedule."""

from __future__ import annotations

import time

import aiohttp
import pytest

from bot.config import ConfigError, load_settings
from bot.wavespeed.schedule import PollSchedule
from bot.wavespeed.webhook import PATH, sign, verify
from tests.botprocess import free_port
from tests.fakes.wavespeed import Scenario


async def test_a_pushed_result_is_delivered_without_a_single_poll(start_bot, wavespeed):
    wavespeed.scenario = Scenario(inference_seconds=1.5)
    port = free_port()
    bot = await start_bot(
        webhook_url=f"http://127.0.0.1:{port}",
        webhook_host="127.0.0.1",
        webhook_port=port,
        wavespeed_webhook_secret=wavespeed.webhook_secret,
    )
    final = await bot.final_edit(await bot.imagine(prompt="pushed"))

    [submit] = wavespeed.accepted_submits()
    [prediction_id] = wavespeed.predictions
    assert submit.query["webhook"] == f"http://127.0.0.1:{port}{PATH}"
    assert wavespeed.webhooks_sent == [(prediction_id, 200)]
    assert final.files and not wavespeed.result_polls(prediction_id)

    async with aiohttp.ClientSession() as session:  # a forged call is refused
        body = b'{"id": "x", "status": "completed", "outputs": ["http://evil/1.png"]}'
        headers = {"webhook-id": "1", "webhook-timestamp": str(int(time.time())), "webhook-signature": "v3,00"}
        async with session.post(f"http://127.0.0.1:{port}{PATH}", data=body, headers=headers) as answer:
            assert answer.status == 401


def test_signatures_are_checked_for_key_id_and_age():
    body, now = b'{"id": "p"}', 1_800_000_000.0
    headers = {
        "webhook-id": "w1",
        "webhook-timestamp": str(int(now)),
        "webhook-signature": sign("s3cret", "w1", str(int(now)), body),
    }
    assert verify("s3cret", headers, body, now=now)
    assert not verify("other", headers, body, now=now)
    assert not verify("s3cret", headers, body + b" ", now=now)
    assert not verify("s3cret", {**headers, "webhook-id": "w2"}, body, now=now)
    assert not verify("s3cret", headers, body, now=now + 301)  # a replay from long ago


def test_a_webhook_url_needs_the_secret(tmp_path):
    with pytest.raises(ConfigError, match="WEBHOOK_URL needs WAVESPEED_WEBHOOK_SECRET"):
        load_settings(_env_file=None, discord_token="t", wavespeed_api_key="k", webhook_url="https://bot.example.com")


def test_the_schedule_skips_the_time_in_which_few_predictions_finish():
    schedule = PollSchedule(interval=0.75, first_default=1.0)
    for seen in range(4):
        schedule.observe(seen, seen + 1.0)
    assert schedule.first_delay() == 1.0  # too few samples to guess from
    schedule = PollSchedule(interval=0.75, first_default=1.0)
    for tenth in range(20, 80, 3):  # inference times spread over 2-8 s
        schedule.observe(tenth / 10 - 0.375, tenth / 10 + 0.375)
    assert schedule.first_delay() == pytest.approx(2.6 - 0.375)  # the 10th percentile, less half a step
    assert schedule.next_delay() == 0.75
