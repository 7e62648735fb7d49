"""`GET /metrics` after real jobs of every outcome: each counter agrees with what the fakes saw."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import aiohttp
import discord
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.discord import FakeDiscord
from tests.fakes.wavespeed import Scenario
from tests.helpers import admin, answered, is_final_edit

if TYPE_CHECKING:
    from tests.conftest import RunningBot

A, B, C, D = 1310000000000000301, 1310000000000000302, 1310000000000000303, 1310000000000000304
EXPIRING = timedelta(minutes=14, seconds=45)  # the token dies while the job waits: the channel route
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape_text(bot: RunningBot) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"{bot.http_url}/metrics") as answer:
        assert answer.status == 200
        assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return await answer.text()


async def scrape(bot: RunningBot) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(await scrape_text(bot)):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def jobs(samples: Samples, outcome: str, reason: str = "") -> float:
    return value(samples, "imagine_jobs_finished_total", outcome=outcome, reason=reason)


async def scrape_until(bot: RunningBot, done: Any, timeout: float = 20.0) -> Samples:
    """Scrape until `done(samples)` holds: counters move right after the edit a test waits for."""
    deadline = time.monotonic() + timeout
    while not done(samples := await scrape(bot)):
        assert time.monotonic() < deadline, "the metrics never reached the expected values"
        await asyncio.sleep(0.05)
    return samples


async def send(bot: RunningBot, prompt: str, user: int, **options: Any) -> dict[str, Any]:
    payload = await bot.imagine(prompt=prompt, user_id=user, **options)
    await answered(bot.discord, payload)
    return payload


def cancel_button(fake: FakeDiscord, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    message = fake.original(payload["token"])
    assert message is not None
    [row] = message["components"]
    [button] = row["components"]
    return str(button["custom_id"]), message


async def test_every_outcome_is_counted_as_the_fakes_saw_it(start_bot, wavespeed):
    wavespeed.scenario_by_prompt = {
        "slow": Scenario(inference_seconds=60),  # outlives JOB_TIMEOUT_SECONDS
        "flagged": Scenario(nsfw_flags=[True, False]),
        "fails": Scenario(final_status="failed", error_code=1200),
        "maybe": Scenario(submit_responses=[502]),  # may have been billed: unconfirmed
        "limited": Scenario(submit_responses=[429], retry_after=0.3),
    }
    bot = await start_bot(max_concurrent_jobs=1, job_timeout_seconds=3, user_window_images=3)
    fake: FakeDiscord = bot.discord

    slow = await send(bot, "slow", A)
    queued = await send(bot, "queued", B)
    # Read from the database at each scrape (two reads: "slow" may be claimed between them at first).
    await scrape_until(bot, lambda s: (value(s, "imagine_jobs_running"), value(s, "imagine_jobs_waiting")) == (1, 1))
    custom_id, message = cancel_button(fake, queued)
    await fake.dispatch_interaction(fake.component_interaction(custom_id, message, user_id=B))

    flagged = await send(bot, "flagged", A, num_images=2)
    fails = await send(bot, "fails", B)
    maybe = await send(bot, "maybe", C)
    limited = await send(bot, "limited", C)
    late = await send(bot, "late", D, created_at=discord.utils.utcnow() - EXPIRING)
    fake.forbidden_channels.add(int(late["channel_id"]))  # the late result goes by DM
    # Refused before anything is sent: a limit, the tolerance cap, a blocked term.
    await send(bot, "too many", C, num_images=4)
    await send(bot, "too permissive", B, safety_tolerance="5")
    await admin(fake, "block", term="forbidden")
    await send(bot, "forbidden fruit", B)

    for payload in (slow, flagged, fails, maybe, limited):
        await bot.final_edit(payload, timeout=30)
    await fake.requests.wait_for(
        lambda r: r.method == "POST" and r.path.startswith("/channels/") and bool(r.files), timeout=30
    )
    samples = await scrape_until(bot, lambda s: jobs(s, "delivered") == 3)

    # Jobs by outcome; a timeout measured from its submit.
    assert jobs(samples, "failed", "prediction_failed") == 1
    assert (jobs(samples, "unconfirmed"), jobs(samples, "timeout"), jobs(samples, "cancelled")) == (1, 1, 1)
    [slow_submit] = [r for r in wavespeed.accepted_submits() if r.json["prompt"] == "slow"]
    [slow_end] = fake.requests.matching(lambda r: is_final_edit(r, slow["token"]))
    # The bot's clock starts as it sends the submit, the fake's record a moment after it arrived.
    assert 3.0 - 0.1 <= slow_end.at - slow_submit.at < 5.0
    # WaveSpeed calls by endpoint and status, as many as the fake answered.
    ws = wavespeed.requests
    for endpoint, records in {
        "submit": [r for r in ws if r.method == "POST"],
        "result": wavespeed.result_polls(),
        "download": wavespeed.downloads(),
        "balance": wavespeed.balance_reads(),
    }.items():
        for status in {r.status for r in records}:
            expected = sum(1 for r in records if r.status == status)
            assert value(samples, "imagine_wavespeed_requests_total", endpoint=endpoint, status=str(status)) == expected
    assert value(samples, "imagine_wavespeed_requests_total", endpoint="submit", status="502") == 1
    assert value(samples, "imagine_wavespeed_rate_limited_total", endpoint="submit") == 1
    # Images billed (num_images of each completed prediction) and flagged, and the spend.
    assert value(samples, "imagine_images_generated_total") == 4
    assert value(samples, "imagine_images_flagged_total") == 1
    assert abs(value(samples, "imagine_estimated_spend_dollars_total") - 4 * 0.04) < 1e-9
    # Durations: one queue wait per accepted submit, one generation and delivery per delivered job.
    assert value(samples, "imagine_queue_wait_seconds_count") == len(wavespeed.accepted_submits()) == 5
    assert value(samples, "imagine_generation_seconds_count") == 3
    assert value(samples, "imagine_delivery_seconds_count") == 3
    assert value(samples, "imagine_deliveries_total", route="placeholder") == 2
    assert value(samples, "imagine_deliveries_total", route="dm") == 1
    # Discord's refusal of the channel post, by status and code; the refusals by rule.
    refused = fake.requests.matching(lambda r: r.status == 403)  # the channel post and progress edits there
    assert refused and value(samples, "imagine_discord_api_errors_total", status="403", code="50013") == len(refused)
    assert not fake.requests.matching(lambda r: r.status >= 400 and r.status != 403)
    assert value(samples, "imagine_refusals_total", kind="limit", reason="user_window") == 1
    assert value(samples, "imagine_refusals_total", kind="cap", reason="tolerance_cap") == 1
    assert value(samples, "imagine_refusals_total", kind="blocked_term", reason="blocked_term") == 1
    # The line is empty again; the process and the connection.
    assert (value(samples, "imagine_jobs_waiting"), value(samples, "imagine_jobs_running")) == (0, 0)
    assert value(samples, "imagine_discord_connected") == 1
    assert value(samples, "imagine_wavespeed_balance_dollars") == wavespeed.balance
    assert value(samples, "process_resident_memory_bytes") > 10_000_000
    assert value(samples, "imagine_event_loop_lag_seconds_count") > 0


async def test_labels_are_bounded_no_ids_no_prompts(start_bot, wavespeed):
    bot = await start_bot()
    payload = await bot.imagine(prompt="a violet heron", user_id=A)
    await bot.final_edit(payload)
    await scrape_until(bot, lambda s: jobs(s, "delivered") == 1)  # counted just after the edit
    text = await scrape_text(bot)

    [prediction_id] = wavespeed.predictions
    for private in ("violet heron", prediction_id, str(A), str(bot.discord.guild_id), str(bot.discord.channel_id)):
        assert private not in text
    assert 'imagine_jobs_finished_total{outcome="delivered",reason=""} 1.0' in text
