"""`python -m bot` as a real process: configuration errors, start-up, command sync, SIGTERM."""

from __future__ import annotations

import asyncio
import signal

import discord

from tests import dbread
from tests.botprocess import fake_env, spawn
from tests.fakes.discord import FakeDiscord
from tests.fakes.wavespeed import FakeWaveSpeed


async def test_missing_settings_stop_start_up_with_one_clear_message(tmp_path):
    process = await spawn({"WAVESPEED_API_KEY": "ws-secret-value", "JOB_TIMEOUT_SECONDS": "-1"}, tmp_path)
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    text = stderr.decode()
    assert process.returncode == 2
    assert "DISCORD_TOKEN is required" in text and "JOB_TIMEOUT_SECONDS is invalid" in text
    assert "Traceback" not in text and "ws-secret-value" not in text


async def test_the_bot_process_connects_syncs_once_and_exits_cleanly_on_sigterm(
    tmp_path, database_url: str, discord_fake: FakeDiscord, wavespeed: FakeWaveSpeed
):
    # On SQLite the bot runs on the default DATABASE_URL (checked at the end); else on the test's database.
    on_sqlite = dbread.is_sqlite(database_url)
    database = {} if on_sqlite else {"DATABASE_URL": database_url}
    env = {**fake_env(discord_fake, wavespeed, DISCORD_GUILD_IDS="111111111111111111"), **database}

    def syncs():
        return discord_fake.requests.matching(lambda r: r.method == "PUT" and r.path.endswith("/commands"))

    for run in range(2):
        discord_fake.identified.clear()
        process = await spawn(env, tmp_path)
        try:
            await asyncio.wait_for(discord_fake.identified.wait(), 30)
        finally:
            process.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, stderr.decode()[-2000:]
        assert discord_fake.token not in stderr.decode() and wavespeed.api_key not in stderr.decode()
        # First run: synced to the configured guild. Second run: unchanged, so no sync at all.
        assert len(syncs()) == 1, run
    [sync] = syncs()
    assert sync.path == f"/applications/{discord_fake.application_id}/guilds/111111111111111111/commands"
    assert sorted(c["name"] for c in sync.json) == [
        "imagine",
        "imagine-admin",
        "imagine-edit",
        "imagine-forget-me",
        "imagine-history",
        "usage",
    ]
    [admin] = [c for c in sync.json if c["name"] == "imagine-admin"]
    assert int(admin["default_member_permissions"]) == discord.Permissions(manage_guild=True).value
    assert admin["contexts"] == [0] and {o["name"] for o in admin["options"]} >= {"show", "nsfw", "block", "reset"}
    [command] = [c for c in sync.json if c["name"] == "imagine"]
    assert command["contexts"] == [0]  # servers only: ALLOW_DMS is off by default
    options = {o["name"]: o for o in command["options"]}
    assert list(options) == ["prompt", "aspect_ratio", "num_images", "seed", "guidance_scale", "safety_tolerance"]
    assert all(o["description"] for o in options.values())
    assert options["prompt"]["required"] and options["prompt"]["max_length"] == 2000
    assert (options["num_images"]["min_value"], options["num_images"]["max_value"]) == (1, 4)
    assert (options["guidance_scale"]["min_value"], options["guidance_scale"]["max_value"]) == (1.0, 10.0)
    assert [c["value"] for c in options["safety_tolerance"]["choices"]] == ["1", "2", "3", "4", "5"]
    assert len(options["aspect_ratio"]["choices"]) == 9
    # The default DATABASE_URL, relative to the working directory; never made beside another DATABASE_URL.
    assert (tmp_path / "data" / "bot.db").exists() is on_sqlite
