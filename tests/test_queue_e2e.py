"""The fair queue, cancel, limits, access and /usage, end to end against the fakes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import discord
import pytest

from tests import dbread
from tests.fakes.discord import FakeDiscord
from tests.fakes.wavespeed import Scenario
from tests.helpers import answered, embeds_text, placeholder_title, wait_until

if TYPE_CHECKING:
    from tests.conftest import RunningBot

A, B, C = 1310000000000000201, 1310000000000000202, 1310000000000000203
MANAGE_MESSAGES = discord.Permissions(manage_messages=True).value
MANAGE_GUILD = discord.Permissions(manage_guild=True).value


async def send(bot: RunningBot, prompt: str, user: int, **options: Any) -> dict[str, Any]:
    payload = await bot.imagine(prompt=prompt, user_id=user, **options)
    await answered(bot.discord, payload)
    return payload


def submitted_prompts(wavespeed) -> list[str]:
    return [r.json["prompt"] for r in wavespeed.accepted_submits()]


def cancel_id(fake: FakeDiscord, payload: dict[str, Any]) -> str:
    message = fake.original(payload["token"])
    assert message is not None
    [row] = message["components"]
    [button] = row["components"]
    assert button["label"] == "Cancel"
    return str(button["custom_id"])


async def test_ten_jobs_from_three_members_are_fair_and_never_over_capacity(start_bot, wavespeed):
    wavespeed.scenario = Scenario(inference_seconds=0.6)
    bot = await start_bot(max_concurrent_jobs=2)
    jobs = [(f"a{i}", A) for i in range(1, 7)] + [(f"b{i}", B) for i in range(1, 4)] + [("c1", C)]
    payloads = [await send(bot, prompt, user) for prompt, user in jobs]
    finals = [await bot.final_edit(p, timeout=60) for p in payloads]

    assert all(f.files for f in finals)  # every job delivered
    assert wavespeed.max_in_flight() <= 2
    order = submitted_prompts(wavespeed)
    assert sorted(order) == sorted(p for p, _ in jobs)  # each submitted exactly once
    # Member A queued six before the others arrived; B's and C's first jobs still went before A's third.
    assert order.index("b1") < order.index("a3") and order.index("c1") < order.index("a3")
    positions = [embeds_text(r) for r in bot.discord.requests if r.method == "PATCH" and "in line" in embeds_text(r)]
    assert any("#2 in line" in t for t in positions) and any("next in line" in t for t in positions)


async def test_cancel_while_queued_costs_nothing_and_only_the_requester_or_a_moderator_may(start_bot, wavespeed):
    wavespeed.scenario_by_prompt = {"long": Scenario(inference_seconds=2.0)}
    bot = await start_bot(max_concurrent_jobs=1)
    fake: FakeDiscord = bot.discord
    first = await send(bot, "long", A)
    second = await send(bot, "waiting", A)
    third = await send(bot, "also waiting", B)
    message = fake.original(second["token"])
    assert message is not None

    stranger = fake.component_interaction(cancel_id(fake, second), message, user_id=C)
    await fake.dispatch_interaction(stranger)
    refusal = await answered(fake, stranger)
    assert refusal.json["data"]["flags"] & 64 and "Only the member" in embeds_text(refusal)

    own = fake.component_interaction(cancel_id(fake, second), message, user_id=A)
    await fake.dispatch_interaction(own)
    update = await answered(fake, own)
    assert update.json["type"] == 7 and "Nothing was charged" in embeds_text(update)
    assert update.json["data"]["components"] == []

    third_message = fake.original(third["token"])
    assert third_message is not None
    moderator = fake.component_interaction(
        cancel_id(fake, third), third_message, user_id=C, member_permissions=MANAGE_MESSAGES
    )
    await fake.dispatch_interaction(moderator)
    assert "Cancelled by <@" in embeds_text(await answered(fake, moderator))

    await bot.final_edit(first)
    assert submitted_prompts(wavespeed) == ["long"]  # the cancelled ones never reached WaveSpeed
    assert placeholder_title(fake, second["token"]) == "Cancelled"


async def test_cancel_after_the_job_started_is_refused(start_bot, wavespeed):
    wavespeed.scenario = Scenario(inference_seconds=1.5)
    bot = await start_bot()
    payload = await send(bot, "already going", A)
    custom_id = cancel_id(bot.discord, payload)
    await wavespeed.requests.wait_for(lambda r: r.method == "POST")
    press = bot.discord.component_interaction(custom_id, bot.discord.original(payload["token"]), user_id=A)
    await bot.discord.dispatch_interaction(press)
    assert "already started" in embeds_text(await answered(bot.discord, press))
    assert (await bot.final_edit(payload)).files


@pytest.mark.parametrize(
    ("setting", "second_user", "second_guild", "says"),
    [
        ("user_max_active_images", A, None, "queued or in progress"),
        ("user_window_images", A, None, "in the last hour"),
        ("guild_daily_images", B, None, "This server has used 2 of its 2 images"),
        ("global_daily_images", B, 222222222222222222, "daily budget of 2 images"),
    ],
)
async def test_each_limit_refuses_politely_with_no_api_call(
    start_bot, wavespeed, setting, second_user, second_guild, says
):
    busy = setting == "user_max_active_images"
    wavespeed.scenario = Scenario(inference_seconds=20 if busy else 0.2)
    bot = await start_bot(**{setting: 2})
    first = await send(bot, "first", A, num_images=2)
    if busy:
        await wavespeed.requests.wait_for(lambda r: r.method == "POST")
    else:
        await bot.final_edit(first)
    extra = {"guild_id": second_guild} if second_guild else {}
    second = await bot.imagine(prompt="one more", user_id=second_user, **extra)
    refusal = await answered(bot.discord, second)

    assert refusal.json["data"]["flags"] & 64 and says in embeds_text(refusal)
    assert "Nothing was sent" in embeds_text(refusal)
    assert submitted_prompts(wavespeed) == ["first"]


async def test_a_429_on_submit_holds_the_queue_then_delivers_everything(start_bot, wavespeed, database_url):
    wavespeed.scenario = Scenario(submit_responses=[429], retry_after=1.5)
    bot = await start_bot()
    first = await send(bot, "first", A)
    # The second job arrives once the 429 has paused the queue: sooner, both may be claimed before the
    # 429 comes back and go out side by side (there is room for two), which is no hold to test.
    await wait_until(lambda: dbread.rows(database_url, "SELECT paused_until FROM queue_state")[0][0] > 0)
    second = await send(bot, "second", B)
    finals = [await bot.final_edit(p, timeout=30) for p in (first, second)]

    assert all(f.files for f in finals) and sorted(submitted_prompts(wavespeed)) == ["first", "second"]
    rejected, *after = wavespeed.submits()
    assert rejected.status == 429 and len(after) == 2 and all(r.at - rejected.at >= 1.4 for r in after)
    texts = [embeds_text(r) for r in bot.discord.requests if r.method == "PATCH"]
    assert any("slow down" in t for t in texts)  # the placeholders said why they waited


async def test_a_restart_keeps_the_queue_order(start_bot, wavespeed):
    wavespeed.scenario_by_prompt = {"a1": Scenario(inference_seconds=2.0)}
    bot = await start_bot(max_concurrent_jobs=1, shutdown_grace_seconds=0)
    payloads = [
        await send(bot, prompt, user) for prompt, user in [("a1", A), ("a2", A), ("a3", A), ("b1", B), ("c1", C)]
    ]
    await wavespeed.requests.wait_for(lambda r: r.path.endswith("/result"))
    await bot.stop()
    assert submitted_prompts(wavespeed) == ["a1"]

    bot = await start_bot(max_concurrent_jobs=1)
    for payload in payloads:
        assert (await bot.final_edit(payload, timeout=30)).files
    assert submitted_prompts(wavespeed) == ["a1", "b1", "c1", "a2", "a3"]


async def test_usage_shows_a_member_their_own_and_a_manager_the_server_spend(start_bot, wavespeed):
    bot = await start_bot(user_window_images=10, price_per_image=0.04)
    await bot.final_edit(await send(bot, "two", A, num_images=2))
    fake: FakeDiscord = bot.discord

    member = fake.interaction("usage", {}, user_id=A)
    await fake.dispatch_interaction(member)
    mine = embeds_text(await answered(fake, member))
    manager = fake.interaction("usage", {}, user_id=B, member_permissions=MANAGE_GUILD)
    await fake.dispatch_interaction(manager)
    theirs = embeds_text(await answered(fake, manager))

    assert "2 of 10 · 8 left" in mine and "Today:** 2" in mine and "$" not in mine
    assert "Today:** 2 images · $0.08" in theirs and "0 of 10" in theirs


@pytest.mark.parametrize(
    ("settings", "interaction", "says"),
    [
        ({"allowed_guild_ids": "999"}, {}, "isn't enabled on this server"),
        ({"allowed_user_ids": str(B)}, {"user_id": A}, "not on this bot's list"),
        ({}, {"guild_id": None}, "only make images in servers"),
    ],
)
async def test_access_settings_refuse_before_anything_is_sent(start_bot, wavespeed, settings, interaction, says):
    bot = await start_bot(**settings)
    payload = await bot.imagine(prompt="let me in", **interaction)
    refusal = await answered(bot.discord, payload)
    assert refusal.json["data"]["flags"] & 64 and says in embeds_text(refusal)
    assert not wavespeed.submits()


async def test_a_burst_is_answered_before_any_of_it_is_submitted(start_bot, wavespeed):
    """Members waiting for an answer come first (bot.jobs.foreground): while a burst of commands is
    being answered, no queued job is claimed and submitted, even with slots free for all of them."""
    bot = await start_bot(max_concurrent_jobs=100)
    payloads = [bot.discord.interaction("imagine", {"prompt": f"burst {i}"}, user_id=A + i) for i in range(60)]
    for payload in payloads:
        await bot.discord.dispatch_interaction(payload)
    callbacks = [await answered(bot.discord, payload) for payload in payloads]
    await wait_until(lambda: len(wavespeed.accepted_submits()) == 60)

    assert all(c.status == 200 for c in callbacks)
    last_answer = max(c.at for c in callbacks)
    first_submit = min(s.at for s in wavespeed.accepted_submits())
    assert first_submit > last_answer


@pytest.mark.parametrize(
    ("settings_", "options"),
    [({"allowed_guild_ids": "999"}, {"prompt": "refused"}), ({}, {"prompt": "   "})],
    ids=["refused", "invalid-option"],
)
async def test_an_answer_too_late_is_dropped_quietly(start_bot, wavespeed, log_lines, settings_, options):
    """An expired command (an overloaded bot) costs one warning, not a traceback per command: a
    refusal, or an option the bot refuses, whose answer Discord no longer takes."""
    bot = await start_bot(**settings_)
    payload = bot.discord.interaction("imagine", options)
    await bot.discord.dispatch_interaction(payload, backdate=3.5)  # the 3-second window is already gone
    callback = await answered(bot.discord, payload)

    assert callback.status == 404 and not wavespeed.submits()
    await wait_until(lambda: any("expired before the bot could answer it" in line for line in log_lines()))
    assert not [line for line in log_lines() if "Traceback" in line or "command failed" in line]
