"""/imagine-history end to end: a member's own jobs only, in this server or in DMs, ten a page,
newest first, with links to the results; the page buttons turn only for that member."""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any

from tests.fakes.discord import FakeDiscord
from tests.helpers import answered, embeds_text

if TYPE_CHECKING:
    from tests.conftest import RunningBot

REQUESTER, OTHER = 1310000000000000201, 1310000000000000202


async def history(fake: FakeDiscord, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run /imagine-history; returns its payload and the private answer's data."""
    payload = fake.interaction("imagine-history", {}, **kwargs)
    await fake.dispatch_interaction(payload)
    answer = await answered(fake, payload)
    assert answer.json["data"]["flags"] & 64  # private
    return payload, answer.json["data"]


def lines(data: dict[str, Any]) -> list[str]:
    return [line for line in (data["embeds"][0].get("description") or "").split("\n") if line.startswith("- ")]


def page_buttons(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {b["custom_id"].rsplit(":", 1)[1]: b for row in data["components"] for b in row["components"]}


async def made(bot: RunningBot, prompts: list[str], **kwargs: Any) -> list[dict[str, Any]]:
    payloads = []
    for prompt in prompts:  # one at a time: the history's order is the order they were asked
        payloads.append(await bot.imagine(prompt=prompt, **kwargs))
        await answered(bot.discord, payloads[-1])
    await asyncio.gather(*(bot.final_edit(p) for p in payloads))
    return payloads


async def test_history_pages_a_members_own_jobs_newest_first_with_links(start_bot, wavespeed):
    bot = await start_bot(allow_dms=True, max_concurrent_jobs=4, user_max_active_images=0)
    fake: FakeDiscord = bot.discord
    mine = await made(bot, [f"picture number {n}" for n in range(12)], user_id=REQUESTER)
    await made(bot, ["someone else's secret"], user_id=OTHER)
    await made(bot, ["made in a DM"], user_id=REQUESTER, guild_id=None)

    payload, first = await history(fake, user_id=REQUESTER)
    shown = lines(first)
    assert len(shown) == 10 and "picture number 11" in shown[0] and "picture number 2" in shown[9]
    assert all("✅ posted" in line for line in shown)
    result = fake.original(mine[11]["token"])
    assert result is not None
    link = f"https://discord.com/channels/{fake.guild_id}/{result['channel_id']}/{result['id']}"
    assert f"[open]({link})" in shown[0]
    text = embeds_text(first)
    assert "secret" not in text and "made in a DM" not in text
    buttons = page_buttons(first)
    assert buttons["prev"]["disabled"] and not buttons["next"].get("disabled")

    message = fake.original(payload["token"])
    assert message is not None
    stranger = fake.component_interaction(buttons["next"]["custom_id"], message, user_id=OTHER)
    await fake.dispatch_interaction(stranger)
    refused = await answered(fake, stranger)
    assert refused.json["data"]["flags"] & 64 and "another member" in embeds_text(refused)

    turn = fake.component_interaction(buttons["next"]["custom_id"], message, user_id=REQUESTER)
    await fake.dispatch_interaction(turn)
    second = (await answered(fake, turn)).json
    assert second["type"] == 7  # the same private message, now page 2
    assert [re.sub(r".*· ", "", line.split(" · [")[0]) for line in lines(second["data"])] == [
        "picture number 1",
        "picture number 0",
    ]
    assert (
        page_buttons(second["data"])["next"]["disabled"] and second["data"]["embeds"][0]["footer"]["text"] == "Page 2"
    )

    _, in_dm = await history(fake, user_id=REQUESTER, guild_id=None)
    assert [("made in a DM" in line) for line in lines(in_dm)] == [True]
    _, other = await history(fake, user_id=OTHER)
    assert len(lines(other)) == 1 and "secret" in lines(other)[0]


async def test_history_of_a_member_without_jobs_says_so(start_bot):
    bot = await start_bot()
    _, data = await history(bot.discord, user_id=OTHER)
    assert lines(data) == [] and "haven't made any images here" in embeds_text({"data": data})
