"""Crashes and restarts of the real `python -m bot` process against the fakes.

Each test kills the bot with SIGKILL (no handler runs) at one point of a job's life, starts it
again on the same database, and checks from the fakes' records that every job was billed at most
once, delivered exactly once, and that no placeholder was left pending.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import aiohttp
import discord
import pytest

from bot.jobs.model import NewJob
from bot.params import ImagineParams
from bot.storage import open_storage
from tests import dbread
from tests.botprocess import BotProcess, fake_env
from tests.fakes.discord import FakeDiscord
from tests.fakes.wavespeed import FakeWaveSpeed, Scenario
from tests.helpers import (
    FINAL_TITLES,
    embeds_text,
    messages_with_images,
    placeholder_title,
    wait_final_edit,
    wait_until,
)


@pytest.fixture
async def bot(
    tmp_path, database_url: str, discord_fake: FakeDiscord, wavespeed: FakeWaveSpeed
) -> AsyncIterator[BotProcess]:
    env = fake_env(
        discord_fake,
        wavespeed,
        DATABASE_URL=database_url,
        JOB_TIMEOUT_SECONDS="60",
        # A killed bot's jobs wait out its lease before the next process adopts them (on PostgreSQL,
        # where another process may still be alive; SQLite adopts everything at start-up): shrunk
        # like the poll intervals, so a restart does not sit out the default 10 s.
        LEASE_SECONDS="1",
        LOG_LEVEL="DEBUG",
    )
    process = BotProcess(discord_fake, env, tmp_path)
    yield process
    await process.cleanup()


async def imagine(fake: FakeDiscord, prompt: str, **interaction: Any) -> dict[str, Any]:
    payload = fake.interaction("imagine", {"prompt": prompt}, **interaction)
    await fake.dispatch_interaction(payload)
    await fake.requests.wait_for(lambda r: r.path.endswith(f"/{payload['token']}/callback"))
    return payload


def job_states(database_url: str) -> list[str]:
    return [row[0] for row in dbread.rows(database_url, "SELECT state FROM jobs ORDER BY id")]


async def test_killed_while_polling_with_a_job_queued_behind_it(bot, discord_fake, wavespeed, database_url):
    wavespeed.scenario_by_prompt = {"first": Scenario(inference_seconds=3.0)}
    bot.env["MAX_CONCURRENT_JOBS"] = "1"
    await bot.start()
    first = await imagine(discord_fake, "first")
    second = await imagine(discord_fake, "second")  # waits in the queue behind the first
    await wavespeed.requests.wait_for(lambda r: r.path.endswith("/result"))  # the first is being polled
    assert len(wavespeed.accepted_submits()) == 1
    await bot.kill()

    await bot.start()
    finals = [await wait_final_edit(discord_fake, p["token"], timeout=30) for p in (first, second)]

    assert [s.json["prompt"] for s in wavespeed.accepted_submits()] == ["first", "second"]  # once each, in order
    assert all(f.files for f in finals) and len(messages_with_images(discord_fake)) == 2
    assert all(placeholder_title(discord_fake, p["token"]) in FINAL_TITLES for p in (first, second))
    await wait_until(lambda: job_states(database_url) == ["delivered", "delivered"])


async def test_killed_during_the_submit_is_answered_and_never_resent(bot, discord_fake, wavespeed, database_url):
    wavespeed.scenario = Scenario(submit_responses=["accept-then-hang"])  # taken (billed), never answered
    await bot.start()
    payload = await imagine(discord_fake, "a gamble")
    await wavespeed.requests.wait_for(lambda r: r.method == "POST" and r.status == 200)
    await bot.kill()

    await bot.start()
    final = await wait_final_edit(discord_fake, payload["token"])

    assert len(wavespeed.submits()) == 1  # not sent again: it may have been billed
    text = embeds_text(final)
    assert "did not confirm" in text and "not charged twice" in text and not final.files
    await wait_until(lambda: job_states(database_url) == ["unconfirmed"])


async def test_killed_after_completion_before_delivery(bot, discord_fake, wavespeed, database_url):
    wavespeed.scenario = Scenario(download_responses=["hang"])  # the first image download never answers
    await bot.start()
    payload = await imagine(discord_fake, "almost there")
    await wavespeed.requests.wait_for(lambda r: r.path.startswith("/cdn/"))  # completed, downloading
    await bot.kill()
    polls_before = len(wavespeed.result_polls())

    await bot.start()
    final = await wait_final_edit(discord_fake, payload["token"])

    assert len(wavespeed.accepted_submits()) == 1 and len(wavespeed.result_polls()) > polls_before
    assert final.files and len(messages_with_images(discord_fake)) == 1
    await wait_until(lambda: job_states(database_url) == ["delivered"])


async def test_killed_during_delivery_edits_again_without_duplicating(bot, discord_fake, wavespeed, database_url):
    await bot.start()
    payload = await imagine(discord_fake, "delivered twice?")
    hit = discord_fake.stall("PATCH", payload["token"], after=True, with_files=True)  # applied, unanswered
    await asyncio.wait_for(hit.wait(), 20)
    await bot.kill()

    await bot.start()
    await discord_fake.requests.wait_for(lambda r: r.files and payload["token"] in r.path and r.status == 200)
    await wait_until(lambda: job_states(database_url) == ["delivered"])

    assert len(wavespeed.accepted_submits()) == 1
    [delivered] = messages_with_images(discord_fake)  # the placeholder, replaced by the result
    assert delivered is discord_fake.original(payload["token"])
    assert placeholder_title(discord_fake, payload["token"]) == "✨ Imagined"


async def test_late_channel_delivery_is_not_duplicated_after_a_crash(bot, discord_fake, wavespeed, database_url):
    requester = 555000111222333444
    channel = discord_fake.channel_id
    created = discord.utils.utcnow() - timedelta(minutes=14, seconds=45)  # the token is as good as dead
    await bot.start()
    hit = discord_fake.stall("POST", f"/channels/{channel}/messages", after=True, with_files=True)
    payload = await imagine(discord_fake, "late", user_id=requester, created_at=created)
    await asyncio.wait_for(hit.wait(), 20)  # the message exists on Discord, the bot never heard back
    await bot.kill()

    await bot.start()
    posts = await discord_fake.requests.wait_for(
        lambda r: r.method == "POST" and r.path == f"/channels/{channel}/messages", count=2, timeout=30
    )

    assert posts[0].json["nonce"] == posts[1].json["nonce"] and posts[1].json["enforce_nonce"] is True
    assert len(messages_with_images(discord_fake)) == 1  # Discord dropped the repeat by its nonce
    assert len(wavespeed.accepted_submits()) == 1
    placeholder = discord_fake.original(payload["token"])
    assert placeholder is not None
    await discord_fake.requests.wait_for(
        lambda r: (
            r.method == "PATCH" and r.path.endswith(f"/messages/{placeholder['id']}") and "Finished" in embeds_text(r)
        )
    )
    assert posts[1].json["content"] == f"<@{requester}>"


async def test_sigterm_finishes_in_flight_jobs_and_refuses_new_ones(bot, discord_fake, wavespeed, database_url):
    wavespeed.scenario = Scenario(inference_seconds=2.0)
    bot.env["SHUTDOWN_GRACE_SECONDS"] = "20"
    await bot.start()
    payload = await imagine(discord_fake, "finish me")
    await wavespeed.requests.wait_for(lambda r: r.path.endswith("/result"))
    ending = asyncio.create_task(bot.terminate())
    await wait_until(lambda: "shutting down" in bot.log())
    late = await imagine(discord_fake, "too late")
    [refusal] = discord_fake.requests.matching(lambda r: r.path.endswith(f"/{late['token']}/callback"))
    final = await wait_final_edit(discord_fake, payload["token"])

    assert await ending == 0
    assert refusal.json["data"]["flags"] & 64 and "restarting" in embeds_text(refusal)
    assert final.files and [s.json["prompt"] for s in wavespeed.submits()] == ["finish me"]
    await wait_until(lambda: job_states(database_url) == ["delivered"])


async def test_sigterm_pauses_what_outlives_the_grace_period_and_resumes_it(bot, discord_fake, wavespeed, database_url):
    wavespeed.scenario = Scenario(inference_seconds=6.0)
    bot.env["SHUTDOWN_GRACE_SECONDS"] = "0.5"
    await bot.start()
    payload = await imagine(discord_fake, "slow and steady")
    await wavespeed.requests.wait_for(lambda r: r.path.endswith("/result"))

    assert await bot.terminate() == 0
    assert placeholder_title(discord_fake, payload["token"]) == "⏸ Paused"
    assert job_states(database_url) == ["submitted"]

    await bot.start()
    final = await wait_final_edit(discord_fake, payload["token"], timeout=30)
    assert final.files and len(wavespeed.accepted_submits()) == 1
    await wait_until(lambda: job_states(database_url) == ["delivered"])


async def test_sigterm_during_a_sync_submit_says_so_and_never_resends(bot, discord_fake, wavespeed, database_url):
    wavespeed.scenario = Scenario(inference_seconds=6.0)
    bot.env.update(SHUTDOWN_GRACE_SECONDS="0.5", WAVESPEED_SYNC_MODE="true")
    await bot.start()
    payload = await imagine(discord_fake, "no id until it is done")
    await wavespeed.requests.wait_for(lambda r: r.method == "POST")

    assert await bot.terminate() == 0  # the generation outlives the grace period: its answer is lost
    final = await wait_final_edit(discord_fake, payload["token"], timeout=1)
    assert "did not confirm" in embeds_text(final) and not final.files
    assert job_states(database_url) == ["unconfirmed"]

    await bot.start()  # recovery runs before the bot connects: there is nothing to resume or resend
    assert "resuming job" not in bot.log()
    assert len(wavespeed.submits()) == 1 and job_states(database_url) == ["unconfirmed"]


async def test_a_crash_between_answering_and_recording_the_placeholder_is_recovered(
    start_bot, discord_fake, wavespeed, database_url
):
    """The job row exists, the interaction was answered, but the bot died before noting the
    placeholder's id: after the restart it finds the answer through the token and carries on.
    A row whose interaction was never answered is closed without sending anything."""
    answered_payload = discord_fake.interaction("imagine", {"prompt": "answered"})
    silent_payload = discord_fake.interaction("imagine", {"prompt": "silent"})
    for payload in (answered_payload, silent_payload):
        discord_fake._interactions[payload["token"]].dispatched_at = time.monotonic()
    url = f"{discord_fake.api_url}/interactions/{answered_payload['id']}/{answered_payload['token']}/callback"
    async with aiohttp.ClientSession() as http:  # what the bot sent just before it died
        placeholder = {"type": 4, "data": {"embeds": [{"title": "Imagining…", "description": "> answered"}]}}
        async with http.post(url, json=placeholder) as response:
            assert response.status == 204
    # The bot that wrote these rows is gone, its lease run out (lease_seconds=0): the next start adopts them.
    async with contextlib.aclosing(await open_storage(database_url, lease_seconds=0)) as jobs:
        for payload in (answered_payload, silent_payload):
            await jobs.create_job(
                NewJob(
                    interaction_id=int(payload["id"]),
                    interaction_token=payload["token"],
                    application_id=discord_fake.application_id,
                    guild_id=discord_fake.guild_id,
                    channel_id=discord_fake.channel_id,
                    user_id=discord_fake.user_id,
                    created_at=discord.utils.snowflake_time(int(payload["id"])).timestamp(),
                    params=ImagineParams(prompt=payload["data"]["options"][0]["value"], seed=3, seed_was_random=False),
                    file_limit=10 * 1024 * 1024,
                )
            )

        # A Re-roll's reply placeholder, posted with its nonce just before the crash.
        reply = await jobs.create_job(
            NewJob(
                interaction_id=1,
                interaction_token="",
                application_id=discord_fake.application_id,
                guild_id=discord_fake.guild_id,
                channel_id=discord_fake.channel_id,
                user_id=discord_fake.user_id,
                created_at=time.time(),
                params=ImagineParams(prompt="rerolled", seed=4, seed_was_random=False),
                file_limit=10 * 1024 * 1024,
                kind="reroll",
                source_job_id=999,
            )
        )
    posted = {"embeds": [{"title": "Imagining…"}], "nonce": f"imagine-ph-{reply.id}", "enforce_nonce": True}
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{discord_fake.api_url}/channels/{discord_fake.channel_id}/messages",
            json=posted,
            headers={"Authorization": f"Bot {discord_fake.token}"},
        ) as response,
    ):
        reply_message_id = int((await response.json())["id"])

    await start_bot()
    final = await wait_final_edit(discord_fake, answered_payload["token"])
    assert final.files
    await wait_until(lambda: job_states(database_url) == ["delivered", "failed", "delivered"])
    assert sorted(s.json["prompt"] for s in wavespeed.submits()) == ["answered", "rerolled"]
    same_nonce = [
        m for m in discord_fake.channel_messages(discord_fake.channel_id) if m.get("nonce") == posted["nonce"]
    ]
    assert [int(m["id"]) for m in same_nonce] == [reply_message_id]  # found again, not posted twice
    assert same_nonce[0]["attachments"]  # and it became the result
