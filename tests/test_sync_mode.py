"""Sync mode: the submit itself waits for the finished prediction (`enable_sync_mode`)."""

from __future__ import annotations

import pytest

from bot.config import ConfigError, load_settings
from tests.fakes.wavespeed import Scenario
from tests.helpers import embeds_text


async def test_a_sync_submit_is_delivered_without_a_single_poll(start_bot, discord_fake, wavespeed):
    wavespeed.scenario = Scenario(inference_seconds=2.5)
    bot = await start_bot(wavespeed_sync_mode=True)
    payload = await bot.imagine(prompt="in one request", num_images=2)
    final = await bot.final_edit(payload)

    [submit] = wavespeed.accepted_submits()
    [prediction_id] = wavespeed.predictions
    assert submit.json["enable_sync_mode"] is True and submit.json["prompt"] == "in one request"
    assert len(final.files) == 2 and not wavespeed.result_polls(prediction_id)
    # while the submit waits, the placeholder says it is generating, with its clock
    edits = discord_fake.requests.matching(lambda r: r.method == "PATCH" and payload["token"] in r.path)
    progress = [embeds_text(r) for r in edits if r is not final]
    assert progress and all("Generating" in t and ":R>" in t for t in progress)


async def test_when_wavespeed_stops_waiting_the_bot_polls_the_task_it_was_given(start_bot, wavespeed):
    wavespeed.scenario = Scenario(inference_seconds=2.0, sync_wait_seconds=0.3)
    bot = await start_bot(wavespeed_sync_mode=True)
    final = await bot.final_edit(await bot.imagine(prompt="longer than the wait"))

    [prediction_id] = wavespeed.predictions
    assert final.files and len(wavespeed.submits()) == 1  # never submitted twice
    assert wavespeed.result_polls(prediction_id)


async def test_a_sync_submit_that_failed_is_explained(start_bot, wavespeed):
    wavespeed.scenario = Scenario(inference_seconds=0.5, final_status="failed", error="nsfw", error_code=1200)
    bot = await start_bot(wavespeed_sync_mode=True)
    final = await bot.final_edit(await bot.imagine(prompt="refused"))

    assert not final.files and "Couldn't make your image" in embeds_text(final)
    assert not wavespeed.result_polls() and len(wavespeed.submits()) == 1


def test_sync_mode_and_push_are_not_both_on():
    with pytest.raises(ConfigError, match="not both"):
        load_settings(
            _env_file=None,
            discord_token="t",
            wavespeed_api_key="k",
            webhook_url="https://bot.example.com",
            wavespeed_webhook_secret="s",
            wavespeed_sync_mode=True,
        )
