"""Members' bills and moderators' safety under the cases independent testing found: the submit's
answer that proves nothing, jump links, the NSFW policy where images really land, what WaveSpeed may
return, two members editing one result, a locked database and what /usage shows a server."""

from __future__ import annotations

import sqlite3
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import discord
import pytest

from tests import dbread
from tests.fakes.discord import FakeDiscord
from tests.fakes.wavespeed import EDIT, Scenario
from tests.helpers import admin, answered, embeds_text, wait_until

if TYPE_CHECKING:
    from tests.conftest import RunningBot

REQUESTER, OTHER = 1310000000000000201, 1310000000000000202
MANAGE_GUILD = discord.Permissions(manage_guild=True).value
EXPIRING = timedelta(minutes=14, seconds=45)  # the token dies during the job: the channel route is used


def job_rows(database_url: str) -> list[tuple[str, str | None]]:
    return [(row[0], row[1]) for row in dbread.rows(database_url, "SELECT state, outcome FROM jobs ORDER BY id")]


# -- the submit's answer: only a clear refusal may say "try again" --------------------------------


@pytest.mark.parametrize("answer", [502, 500, 503, "html", "envelope-error", "malformed"])
async def test_a_submit_answer_that_proves_nothing_ends_unconfirmed(start_bot, wavespeed, database_url, answer):
    wavespeed.scenario = Scenario(submit_responses=[answer])
    bot = await start_bot()
    final = await bot.final_edit(await bot.imagine(prompt="maybe billed"))

    text = embeds_text(final)
    assert "did not confirm" in text and "not charged twice" in text
    assert "Try again in a moment" not in text  # no invitation to a second charge
    assert len(wavespeed.submits()) == 1
    # The final edit comes first, then the state is written (a repeated edit is harmless, a lost one is not).
    await wait_until(lambda: job_rows(database_url) == [("unconfirmed", "UnconfirmedSubmitError")], timeout=5)


async def test_a_clear_refusal_of_the_submit_fails_plainly(start_bot, wavespeed, database_url):
    wavespeed.scenario = Scenario(submit_responses=[400])  # in WaveSpeed's envelope: nothing was created
    bot = await start_bot()
    final = await bot.final_edit(await bot.imagine(prompt="refused"))

    assert "refused these options" in embeds_text(final) and "did not confirm" not in embeds_text(final)
    await wait_until(lambda: job_rows(database_url) == [("failed", "InvalidRequestError")], timeout=5)


# -- links written after the 15-minute token carry the server ------------------------------------


async def test_a_late_delivery_and_its_log_entry_link_into_the_server(start_bot, wavespeed):
    log_channel = 1310000000000000900
    bot = await start_bot()
    fake: FakeDiscord = bot.discord
    await admin(fake, "log-channel", channel=("channel", log_channel))
    payload = await bot.imagine(prompt="late", created_at=discord.utils.utcnow() - EXPIRING)
    channel = int(payload["channel_id"])

    [sent] = await fake.requests.wait_for(lambda r: r.method == "POST" and r.path == f"/channels/{channel}/messages")
    result_id = next(m["id"] for m in fake.channel_messages(channel) if m.get("nonce") == sent.json["nonce"])
    expected = f"https://discord.com/channels/{fake.guild_id}/{channel}/{result_id}"
    [pointer] = await fake.requests.wait_for(lambda r: r.method == "PATCH" and "Finished" in embeds_text(r))
    [entry] = await fake.requests.wait_for(
        lambda r: r.method == "POST" and r.path == f"/channels/{log_channel}/messages" and "generated" in embeds_text(r)
    )
    assert expected in embeds_text(pointer) and expected in embeds_text(entry)
    assert "/@me/" not in embeds_text(pointer) + embeds_text(entry)


# -- the NSFW policy of the place the images land, decided when they land -------------------------


async def test_a_dm_fallback_spoilers_flagged_images_even_from_an_age_restricted_channel(start_bot, wavespeed):
    wavespeed.scenario = Scenario(nsfw_flags=[True, False])
    bot = await start_bot()
    fake: FakeDiscord = bot.discord
    await admin(fake, "nsfw", channel_kind="age-restricted", policy="show")
    payload = await bot.imagine(
        prompt="night club", num_images=2, channel_nsfw=True, created_at=discord.utils.utcnow() - EXPIRING
    )
    fake.forbidden_channels.add(int(payload["channel_id"]))

    [dm] = await fake.requests.wait_for(
        lambda r: r.method == "POST" and r.path.startswith("/channels/") and r.status == 200 and bool(r.files)
    )
    assert "missing a permission" in dm.json["content"]
    assert [f.filename.startswith("SPOILER_") for f in dm.files] == [True, False]


@pytest.mark.parametrize(
    ("still_restricted", "readable", "spoilered"),
    [(True, True, False), (False, True, True), (True, False, True)],
    ids=["still-age-restricted", "flag-removed-while-waiting", "unknown-is-the-safe-side"],
)
async def test_age_restriction_is_decided_at_delivery(start_bot, wavespeed, still_restricted, readable, spoilered):
    wavespeed.scenario = Scenario(nsfw_flags=[True], inference_seconds=0.8)
    bot = await start_bot()
    fake: FakeDiscord = bot.discord
    await admin(fake, "nsfw", channel_kind="age-restricted", policy="show")
    payload = await bot.imagine(prompt="moody portrait", channel_nsfw=True)  # admitted as age-restricted
    await answered(fake, payload)
    channel = int(payload["channel_id"])
    if not still_restricted:
        fake.nsfw_channels.discard(channel)
    if not readable:
        fake.unreadable_channels.add(channel)

    final = await bot.final_edit(payload)
    assert [f.filename.startswith("SPOILER_") for f in final.files] == [spoilered]
    assert any(r.method == "GET" and r.path == f"/channels/{channel}" for r in fake.requests)


async def test_results_landing_together_ask_discord_about_their_channel_once(start_bot, wavespeed, database_url):
    """A channel missing from the gateway's cache is looked up when a result lands; results landing
    while Discord is being asked share its answer (each under the policy) instead of queueing a
    request each behind one another."""
    wavespeed.scenario = Scenario(nsfw_flags=[True], inference_seconds=0.5)
    bot = await start_bot(max_concurrent_jobs=4)
    fake: FakeDiscord = bot.discord
    await admin(fake, "nsfw", channel_kind="age-restricted", policy="show")
    released = fake.hold("GET", "/channels/")
    payloads = [await bot.imagine(prompt=f"together {i}", channel_nsfw=True) for i in range(4)]
    delivering = "SELECT COUNT(*) FROM jobs WHERE state = 'delivering'"
    await wait_until(lambda: fake.held == 1 and dbread.rows(database_url, delivering)[0][0] == 4, timeout=15)
    released.set()

    finals = [await bot.final_edit(payload) for payload in payloads]
    assert [[f.filename.startswith("SPOILER_") for f in final.files] for final in finals] == [[False]] * 4
    channel = int(payloads[0]["channel_id"])
    assert [r.path for r in fake.requests if r.method == "GET" and r.path.startswith("/channels/")] == [
        f"/channels/{channel}"
    ]


async def test_a_channel_in_the_gateways_cache_is_not_asked_about(start_bot, wavespeed, discord_fake):
    discord_fake.loaded_guilds = {discord_fake.guild_id}  # GUILD_CREATE with its channel, as on Discord
    discord_fake.nsfw_channels.add(discord_fake.channel_id)
    wavespeed.scenario = Scenario(nsfw_flags=[True])
    bot = await start_bot()
    await admin(discord_fake, "nsfw", channel_kind="age-restricted", policy="show")
    final = await bot.final_edit(await bot.imagine(prompt="cached", channel_nsfw=True))

    assert [f.filename.startswith("SPOILER_") for f in final.files] == [False]
    assert not [r for r in discord_fake.requests if r.method == "GET" and r.path.startswith("/channels/")]


# -- what WaveSpeed returns is bounded by what was asked ------------------------------------------


async def test_never_more_outputs_than_asked_and_only_web_links(start_bot, wavespeed):
    wavespeed.scenario = Scenario(outputs_count=4, foreign_outputs=["file:///etc/passwd"])
    bot = await start_bot()
    final = await bot.final_edit(await bot.imagine(prompt="two only", num_images=2))

    assert len(final.files) == 1  # of the first two outputs, only the https one is an image link
    assert len(wavespeed.downloads()) == 1
    assert "passwd" not in embeds_text(final)


async def test_outputs_beyond_num_images_are_never_downloaded(start_bot, wavespeed):
    wavespeed.scenario = Scenario(outputs_count=4)
    bot = await start_bot()
    final = await bot.final_edit(await bot.imagine(prompt="one only", num_images=1))
    assert len(final.files) == 1 and len(wavespeed.downloads()) == 1


# -- the Edit dialog is each member's own ---------------------------------------------------------


async def finished(bot: RunningBot, **options: Any) -> dict[str, Any]:
    payload = await bot.imagine(prompt="a lighthouse", user_id=REQUESTER, **options)
    await bot.final_edit(payload)
    message = bot.discord.original(payload["token"])
    assert message is not None
    return message


async def open_edit(fake: FakeDiscord, message: dict[str, Any], user: int) -> dict[str, Any]:
    [row] = message["components"]
    [button] = [b for b in row["components"] if b["label"] == "Edit"]
    click = fake.component_interaction(button["custom_id"], fake.messages[int(message["id"])], user_id=user)
    await fake.dispatch_interaction(click)
    reply = await answered(fake, click)
    assert reply.json["type"] == 9  # a modal
    return dict(reply.json["data"])


async def test_two_members_editing_one_result_each_get_their_own_dialog(start_bot, wavespeed):
    bot = await start_bot()
    fake: FakeDiscord = bot.discord
    original = await finished(bot)
    first = await open_edit(fake, original, REQUESTER)
    second = await open_edit(fake, original, OTHER)
    assert first["custom_id"] != second["custom_id"]

    for modal, user, text in ((first, REQUESTER, "make it night"), (second, OTHER, "add snow")):
        field = modal["components"][0]["components"][0]["custom_id"]
        submit = fake.modal_submit(modal["custom_id"], {field: text}, message=original, user_id=user)
        await fake.dispatch_interaction(submit)
        await answered(fake, submit)  # each dialog's submit is answered (it used to fail for one of them)
    await wavespeed.requests.wait_for(lambda r: r.path == f"/api/v3/{EDIT}", count=2)
    assert sorted(r.json["prompt"] for r in wavespeed.accepted_submits() if r.path == f"/api/v3/{EDIT}") == [
        "add snow",
        "make it night",
    ]


async def test_a_blank_edit_instruction_is_refused_and_nothing_is_sent(start_bot, wavespeed):
    bot = await start_bot()
    fake: FakeDiscord = bot.discord
    original = await finished(bot)
    modal = await open_edit(fake, original, REQUESTER)
    field = modal["components"][0]["components"][0]["custom_id"]
    submit = fake.modal_submit(modal["custom_id"], {field: "   \n "}, message=original, user_id=REQUESTER)
    await fake.dispatch_interaction(submit)

    refusal = await answered(fake, submit)
    assert refusal.json["data"]["flags"] & 64 and "can't be empty" in embeds_text(refusal)
    assert len(wavespeed.submits()) == 1  # the original only


# -- a database locked by another process ---------------------------------------------------------


@pytest.mark.sqlite_only  # SQLite's write lock, taken by another connection to the file
async def test_a_locked_database_gets_a_busy_answer_in_time_and_loses_nothing(start_bot, wavespeed, database_url):
    bot = await start_bot()
    fake: FakeDiscord = bot.discord
    await bot.final_edit(await bot.imagine(prompt="warm up"))  # the database exists, in WAL mode
    other = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        started = time.monotonic()
        payload = await bot.imagine(prompt="while locked")
        reply = await answered(fake, payload)
        assert reply.at - started < 3.0, "Discord's 3-second window was missed"
        assert reply.json["data"]["flags"] & 64 and "busy" in embeds_text(reply)
        started = time.monotonic()
        said = await admin(fake, "actions", who="requester")  # a settings change waits for the lock too
        assert time.monotonic() - started < 3.0 and "busy" in said
    finally:
        other.execute("ROLLBACK")
        other.close()
    after = await bot.imagine(prompt="after the lock")
    assert len((await bot.final_edit(after)).files) == 1
    # A row the locked request may have written late is closed, never run: nothing is left waiting.
    await wait_until(lambda: all(state in ("delivered", "failed") for state, _ in job_rows(database_url)))
    assert [r.json["prompt"] for r in wavespeed.accepted_submits()] == ["warm up", "after the lock"]
    assert "Re-roll, Edit and Remix: requester" in (await admin(fake, "show")).replace("\n", " ")  # saved once free


# -- /usage shows a server its own figures only ---------------------------------------------------


async def test_usage_shows_a_manager_only_their_own_servers_figures(start_bot, wavespeed):
    other_guild = 222222222222222222
    bot = await start_bot(global_daily_images=1000)
    fake: FakeDiscord = bot.discord
    await bot.final_edit(await bot.imagine(prompt="here", num_images=1))
    await bot.final_edit(await bot.imagine(prompt="elsewhere", num_images=3, guild_id=other_guild))

    manager = fake.interaction("usage", {}, user_id=OTHER, member_permissions=MANAGE_GUILD)
    await fake.dispatch_interaction(manager)
    text = embeds_text(await answered(fake, manager))
    assert "Today:** 1 image ·" in text  # one image, singular (the catalogue has plural forms)
    assert "Whole bot" not in text and "4 of 1000" not in text and "1000" not in text
