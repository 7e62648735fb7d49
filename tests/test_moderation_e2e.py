"""Moderation end to end: /imagine-admin, NSFW policy per channel kind, tolerance caps, blocked terms,
role and channel gates, the moderation log and the Delete button (also after a restart)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import discord
import pytest

from tests.fakes.discord import FakeDiscord
from tests.fakes.recorder import Recorded
from tests.fakes.wavespeed import Scenario
from tests.helpers import MANAGE, admin, answered, embeds_text

if TYPE_CHECKING:
    from tests.conftest import RunningBot

REQUESTER, STRANGER = 1310000000000000201, 1310000000000000202
LOG_CHANNEL, ART_CHANNEL, ARTISTS = 1310000000000000900, 1310000000000000901, 1310000000000000950
MEMBER = discord.Permissions(send_messages=True, use_application_commands=True).value


async def imagine(bot: RunningBot, prompt: str, **options: Any) -> tuple[dict[str, Any], Recorded]:
    payload = await bot.imagine(prompt=prompt, **options)
    return payload, await answered(bot.discord, payload)


def log_entries(fake: FakeDiscord, title: str) -> list[Recorded]:
    return [
        r
        for r in fake.requests
        if r.method == "POST" and r.path == f"/channels/{LOG_CHANNEL}/messages" and title in embeds_text(r)
    ]


async def test_admin_show_set_and_reset(start_bot):
    bot = await start_bot()
    shown = await admin(bot.discord, "show")
    assert "Normal channels: **spoiler**" in shown and "Age-restricted channels: **5**" in shown
    assert "Moderation log: off" in shown or "Moderation log\noff" in shown.replace(": ", "\n")
    assert "never shown plainly" in await admin(bot.discord, "nsfw", channel_kind="normal", policy="show")
    assert "✅" in await admin(bot.discord, "nsfw", channel_kind="normal", policy="withhold")
    assert "Normal channels: **withhold**" in await admin(bot.discord, "show")
    assert "Normal channels: **spoiler**" in await admin(bot.discord, "reset")


@pytest.mark.parametrize(
    ("age_restricted", "policy", "spoilers", "note"),
    [
        (False, None, [True, False, True], "behind a spoiler"),
        (False, "withhold", [False], "withheld"),
        (True, None, [True, False, True], "behind a spoiler"),
        (True, "show", [False, False, False], "without a spoiler"),
    ],
)
async def test_nsfw_policy_per_channel_kind_with_true_false_and_missing_flags(
    start_bot, wavespeed, age_restricted, policy, spoilers, note
):
    wavespeed.scenario = Scenario(nsfw_flags=[True, False])  # the third image has no flag: counts as flagged
    bot = await start_bot()
    if policy:
        await admin(bot.discord, "nsfw", channel_kind="age-restricted" if age_restricted else "normal", policy=policy)
    payload, _ = await imagine(bot, "three cats", num_images=3, channel_nsfw=age_restricted)
    final = await bot.final_edit(payload)

    assert [f.filename.startswith("SPOILER_") for f in final.files] == spoilers
    assert note in embeds_text(final)
    if policy == "withhold":
        assert final.files[0].filename.endswith("_2.png")  # only the unflagged image was posted


async def test_tolerance_caps_refuse_with_the_cap_named(start_bot, wavespeed):
    bot = await start_bot()
    _, refused = await imagine(bot, "bold", safety_tolerance="3")
    assert "above this server's cap of 2" in embeds_text(refused) and refused.json["data"]["flags"] & 64
    _, allowed = await imagine(bot, "bold", safety_tolerance="5", channel_nsfw=True)
    assert allowed.json["type"] == 4 and not allowed.json["data"].get("flags")
    await admin(bot.discord, "tolerance-cap", channel_kind="age-restricted", value="4")
    _, capped = await imagine(bot, "bolder", safety_tolerance="5", channel_nsfw=True)
    assert "cap of 4 for age-restricted channels" in embeds_text(capped)
    await wavespeed.requests.wait_for(lambda r: r.method == "POST")
    assert [r.json["safety_tolerance"] for r in wavespeed.submits()] == ["5"]  # never silently lowered


@pytest.mark.parametrize(
    "prompt",
    [
        "a forbidden fruit",
        "a FORBIDDEN fruit",
        "a ｆｏｒｂｉｄｄｅｎ fruit",
        "a fоrbіdden fruit",
        "a f o r b i d d e n fruit",
    ],
    ids=["plain", "upper", "fullwidth", "cyrillic-lookalikes", "spaced-out"],
)
async def test_blocked_terms_are_caught_after_normalisation(start_bot, wavespeed, prompt):
    bot = await start_bot()
    await admin(bot.discord, "log-channel", channel=("channel", LOG_CHANNEL))
    assert "✅" in await admin(bot.discord, "block", term="forbidden")
    _, refused = await imagine(bot, prompt)

    text = embeds_text(refused)
    assert refused.json["data"]["flags"] & 64 and "doesn't allow" in text and "forbidden" not in text.lower()
    [entry] = await bot.discord.requests.wait_for(lambda r: r in log_entries(bot.discord, "Request refused"))
    assert "Blocked term: `forbidden`" in embeds_text(entry) and entry.json["allowed_mentions"] == {"parse": []}
    payload, _ = await imagine(bot, "a permitted fruit in a classroom")
    assert (await bot.final_edit(payload)).files
    assert [r.json["prompt"] for r in wavespeed.submits()] == ["a permitted fruit in a classroom"]


async def test_a_regex_that_does_not_compile_is_refused_when_added(start_bot):
    bot = await start_bot()
    assert "Not added" in await admin(bot.discord, "block", term="([a-z", regex=True)
    assert "✅" in await admin(bot.discord, "block", term=r"dr[a4]gons?", regex=True)
    assert "Blocked terms\n1 (1 regular expression)" in (await admin(bot.discord, "show")).replace(": ", "\n")


async def test_role_and_channel_gates(start_bot, wavespeed):
    bot = await start_bot()
    await admin(bot.discord, "allow-channel", channel=("channel", ART_CHANNEL))
    _, elsewhere = await imagine(bot, "here?")
    assert "can't be made in this channel" in embeds_text(elsewhere) and f"<#{ART_CHANNEL}>" in embeds_text(elsewhere)
    await admin(bot.discord, "allow-role", role=("role", ARTISTS))
    _, no_role = await imagine(bot, "without the role", channel_id=ART_CHANNEL)
    assert "limited to certain roles" in embeds_text(no_role)
    payload = bot.discord.interaction(
        "imagine", {"prompt": "with the role"}, channel_id=ART_CHANNEL, roles=[ARTISTS], user_id=REQUESTER
    )
    await bot.discord.dispatch_interaction(payload)
    assert (await bot.final_edit(payload)).files
    assert [r.json["prompt"] for r in wavespeed.submits()] == ["with the role"]


async def test_every_generation_is_logged_with_its_images_and_mentions_nobody(start_bot, wavespeed):
    wavespeed.scenario = Scenario(nsfw_flags=[True, False])
    bot = await start_bot()
    await admin(bot.discord, "log-channel", channel=("channel", LOG_CHANNEL))
    payload, _ = await imagine(bot, "@everyone two foxes", num_images=2, user_id=REQUESTER)
    await bot.final_edit(payload)

    [entry] = await bot.discord.requests.wait_for(lambda r: r in log_entries(bot.discord, "Image generated"))
    text = embeds_text(entry)
    [prediction_id] = wavespeed.predictions
    assert f"<@{REQUESTER}>" in text and "two foxes" in text and f"`{prediction_id}`" in text
    assert "1 flagged" in text and "Jump to the result" in text and "seed `" in text
    assert [f.filename.startswith("SPOILER_") for f in entry.files] == [True, False]
    assert entry.json["allowed_mentions"] == {"parse": []}


async def test_delete_by_requester_and_moderator_refused_for_others_and_after_a_restart(start_bot, wavespeed):
    bot = await start_bot()
    await admin(bot.discord, "log-channel", channel=("channel", LOG_CHANNEL))
    first, _ = await imagine(bot, "first", user_id=REQUESTER)
    second, _ = await imagine(bot, "second", user_id=REQUESTER)
    third, _ = await imagine(bot, "third", user_id=REQUESTER)
    for payload in (first, second, third):
        await bot.final_edit(payload)
    fake: FakeDiscord = bot.discord

    async def press(payload: dict[str, Any], user: int, permissions: int | None = None) -> str:
        message = fake.original(payload["token"])
        assert message is not None
        [button] = [b for b in message["components"][0]["components"] if b["label"] == "Delete"]
        click = fake.component_interaction(
            button["custom_id"], message, user_id=user, member_permissions=permissions or MEMBER
        )
        await fake.dispatch_interaction(click)
        return embeds_text(await answered(fake, click))

    def deleted(payload: dict[str, Any]) -> bool:
        return fake.original(payload["token"]) is None

    assert "Only the member" in await press(first, STRANGER) and not deleted(first)
    assert "Deleted" in await press(first, REQUESTER) and deleted(first)
    assert "Deleted" in await press(second, STRANGER, MANAGE) and deleted(second)
    await bot.stop()

    bot = await start_bot()
    assert "Deleted" in await press(third, REQUESTER) and deleted(third)
    entries = await fake.requests.wait_for(lambda r: r in log_entries(fake, "Result deleted"), count=3)
    assert any(f"<@{STRANGER}>" in embeds_text(e) for e in entries)  # the moderator who deleted
