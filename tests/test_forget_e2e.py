"""/imagine-forget-me end to end: a confirmation only the member can press; erasing deletes the
member's prompts, options, tokens and links in every server (checked in the database) while the
limits still count what was made; waiting jobs are cancelled or left to finish, as chosen, and what
still runs is erased once it ends."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from tests import dbread
from tests.fakes.discord import FakeDiscord
from tests.fakes.wavespeed import Scenario
from tests.helpers import answered, embeds_text, wait_until

if TYPE_CHECKING:
    from tests.conftest import RunningBot

MEMBER, OTHER = 1310000000000000201, 1310000000000000202
ELSEWHERE = 1310000000000000399  # another server


async def forget_me(fake: FakeDiscord, user_id: int = MEMBER) -> tuple[dict[str, Any], dict[str, Any]]:
    payload = fake.interaction("imagine-forget-me", {}, user_id=user_id)
    await fake.dispatch_interaction(payload)
    answer = await answered(fake, payload)
    assert answer.json["data"]["flags"] & 64  # private
    return payload, answer.json["data"]


async def choose(fake: FakeDiscord, payload: dict[str, Any], label: str, user_id: int = MEMBER) -> dict[str, Any]:
    """Press `label` on the confirmation; the answer: a refusal, or the confirmation as it became."""
    message = fake.original(payload["token"])
    assert message is not None
    [button] = [b for row in message["components"] for b in row["components"] if b["label"] == label]
    press = fake.component_interaction(button["custom_id"], message, user_id=user_id)
    await fake.dispatch_interaction(press)
    answer: dict[str, Any] = (await answered(fake, press)).json
    if answer["type"] == 6:  # acknowledged; the confirmation is then edited with the outcome
        [edit] = await fake.requests.wait_for(
            lambda r: r.method == "PATCH" and press["token"] in r.path and r.path.endswith("/@original")
        )
        answer = {"type": 6, "data": edit.json}
    return answer


def prompts(url: str, user_id: int) -> list[str]:
    return [
        json.loads(p)["prompt"]
        for (p,) in dbread.rows(url, "SELECT params FROM jobs WHERE user_id = ? ORDER BY id", user_id)
    ]


async def made(bot: RunningBot, prompt: str, **options: Any) -> dict[str, Any]:
    payload = await bot.imagine(prompt=prompt, **options)
    await bot.final_edit(payload)
    return payload


async def test_erasing_deletes_the_text_everywhere_and_the_limits_still_hold(start_bot, wavespeed, database_url):
    bot = await start_bot(user_window_images=4)
    fake: FakeDiscord = bot.discord
    first = await made(bot, "my secret castle", user_id=MEMBER, num_images=2)
    await made(bot, "a castle elsewhere", user_id=MEMBER, guild_id=ELSEWHERE)
    await made(bot, "their own castle", user_id=OTHER)
    dbread.execute(  # one job from three days ago: no budget counts it any more
        database_url, "UPDATE jobs SET created_at = created_at - 259200 WHERE params LIKE '%elsewhere%'"
    )

    payload, confirm = await forget_me(fake)
    assert "Finished jobs: **2**" in embeds_text({"data": confirm})
    refused = await choose(fake, payload, "Erase my data", user_id=OTHER)
    assert refused["data"]["flags"] & 64 and "another member" in embeds_text(refused)
    assert prompts(database_url, MEMBER) == ["my secret castle", "a castle elsewhere"]  # nothing yet

    done = await choose(fake, payload, "Erase my data")
    assert done["type"] == 6 and done["data"]["components"] == []
    assert "Jobs deleted: **1**" in embeds_text(done) and "**1**" in embeds_text(done).split("until")[1]
    assert prompts(database_url, MEMBER) == [""]  # today's job, kept as a count without text
    [kept] = dbread.rows(
        database_url,
        "SELECT kind, interaction_token, channel_id, message_id, result_message_id, prediction_id, num_images "
        "FROM jobs WHERE user_id = ?",
        MEMBER,
    )
    assert kept == ("forgotten", None, None, None, None, None, 2)
    events = "SELECT COUNT(*) FROM job_events e JOIN jobs j ON j.id = e.job_id WHERE j.user_id = ?"
    assert dbread.rows(database_url, events, MEMBER) == [(0,)]
    assert prompts(database_url, OTHER) == ["their own castle"]

    castle = fake.original(first["token"])
    assert castle is not None
    for label in ("Re-roll", "Remix", "Details"):  # the result is still in the channel; its text is gone
        [button] = [b for row in castle["components"] for b in row["components"] if b["label"] == label]
        click = fake.component_interaction(button["custom_id"], castle, user_id=OTHER)
        await fake.dispatch_interaction(click)
        gone = await answered(fake, click)
        assert gone.json["data"]["flags"] & 64 and "erased their data" in embeds_text(gone)
    over = await bot.imagine(prompt="one more", user_id=MEMBER, num_images=3)  # 2 + 3 > 4 in the window
    assert "in the last hour" in embeds_text(await answered(fake, over))
    history = fake.interaction("imagine-history", {}, user_id=MEMBER)
    await fake.dispatch_interaction(history)
    assert "haven't made any images here" in embeds_text(await answered(fake, history))
    _, again = await forget_me(fake)
    assert "holds nothing about you" in embeds_text({"data": again}) and again.get("components") in (None, [])
    assert len(wavespeed.submits()) == 3


async def test_keep_erases_nothing(start_bot, wavespeed, database_url):
    bot = await start_bot()
    await made(bot, "keep this one", user_id=MEMBER)
    payload, _ = await forget_me(bot.discord)
    kept = await choose(bot.discord, payload, "Keep my data")
    assert "Nothing was erased" in embeds_text(kept) and prompts(database_url, MEMBER) == ["keep this one"]


async def test_waiting_jobs_are_cancelled_and_a_running_one_is_erased_when_it_ends(start_bot, wavespeed, database_url):
    wavespeed.scenario_by_prompt = {"slow running job": Scenario(inference_seconds=1.5)}
    bot = await start_bot(max_concurrent_jobs=1)
    fake: FakeDiscord = bot.discord
    running = await bot.imagine(prompt="slow running job", user_id=MEMBER)
    await answered(fake, running)
    await wavespeed.requests.wait_for(lambda r: r.method == "POST")  # it is on WaveSpeed
    waiting = await bot.imagine(prompt="waiting job", user_id=MEMBER)
    await answered(fake, waiting)

    payload, confirm = await forget_me(fake)
    assert "waiting or running: **2**" in embeds_text({"data": confirm})
    done = await choose(fake, payload, "Cancel my waiting jobs and erase")
    text = embeds_text(done)
    assert "Waiting jobs cancelled: **1**" in text and "Still running: **1**" in text
    cancelled = await fake.requests.wait_for(
        lambda r: r.method == "PATCH" and waiting["token"] in r.path and "Cancelled" in embeds_text(r)
    )
    assert cancelled  # the waiting placeholder does not keep saying "Queued"
    assert prompts(database_url, MEMBER) == ["slow running job"]  # left to finish

    await bot.final_edit(running)  # delivered as usual, then erased
    pending = "SELECT COUNT(*) FROM meta WHERE key LIKE 'forget-me:%'"
    # Erased, then the note that it waited is cleared (two statements: wait for both).
    await wait_until(lambda: dbread.rows(database_url, pending) == [(0,)])
    assert prompts(database_url, MEMBER) == [""]
    assert [r.json["prompt"] for r in wavespeed.submits()] == ["slow running job"]
