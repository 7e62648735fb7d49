"""`python -m bot check` as a real process against the fakes: one line per check, the right exit
status, and never a secret in what it prints."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import discord

from tests.botprocess import ROOT, fake_env, free_port
from tests.fakes.discord import DEFAULT_GUILD_ID, FakeDiscord
from tests.fakes.wavespeed import FakeWaveSpeed

STRANGER_GUILD, NO_SCOPE_GUILD = 222222222222222222, 333333333333333333
WEBHOOK_SECRET = "whsec_dGVzdC13ZWJob29rLWtleQ"
DB_PASSWORD = "a-database-password-0123"


async def check(env: dict[str, str], cwd: Path) -> tuple[int, list[str]]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "WAVESPEED_", "DATABASE_"))}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "check",
        cwd=cwd,
        env={**clean, "PYTHONPATH": str(ROOT), **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode().splitlines()


def line(lines: list[str], start: str) -> str:
    [found] = [text for text in lines if text.startswith(start)]
    return found


def no_secret_in(lines: list[str], *secrets: str) -> None:
    text = "\n".join(lines)
    for secret in secrets:
        assert secret not in text


async def test_everything_good_is_one_tick_per_check(
    tmp_path, database_url: str, discord_fake: FakeDiscord, wavespeed: FakeWaveSpeed
):
    env = fake_env(
        discord_fake,
        wavespeed,
        DATABASE_URL=database_url,
        DISCORD_GUILD_IDS=str(DEFAULT_GUILD_ID),
        WEBHOOK_URL="https://bot.example.com",
        WAVESPEED_WEBHOOK_SECRET=WEBHOOK_SECRET,
    )
    status, lines = await check(env, tmp_path)

    assert status == 0, lines
    assert lines[0] == "✓ settings: valid"
    assert line(lines, "✓ Discord token:") == (
        f"✓ Discord token: accepted: bot {discord_fake.bot_name} (id {discord_fake.bot_user_id}), "
        f"application {discord_fake.application_id}"
    )
    assert line(lines, f"✓ server {DEFAULT_GUILD_ID}:").endswith(
        "View Channels, Send Messages, Embed Links, Attach Files, Read Message History (server-wide)"
    )
    assert line(lines, "✓ WaveSpeed key:") == "✓ WaveSpeed key: accepted, balance $100.00"
    backend = "sqlite" if database_url.startswith("sqlite") else "postgresql"
    assert re.fullmatch(
        rf"✓ database: {backend} opened and migrated \(schema version \d+\)", line(lines, "✓ database:")
    )
    assert line(lines, "✓ webhook:").startswith("✓ webhook: pushes to https://bot.example.com/wavespeed/webhook")
    assert lines[-1] == "all checks passed" and not [text for text in lines if text.startswith("✗")]
    # It asked the real endpoints, with the token and the key, and nothing else.
    asked = {(r.method, r.path) for r in discord_fake.requests}
    assert asked == {
        ("GET", "/users/@me"),
        ("GET", "/applications/@me"),
        ("GET", f"/guilds/{DEFAULT_GUILD_ID}"),
        ("GET", f"/guilds/{DEFAULT_GUILD_ID}/members/{discord_fake.bot_user_id}"),
        ("GET", f"/applications/{discord_fake.application_id}/guilds/{DEFAULT_GUILD_ID}/commands"),
    }
    assert [r.path for r in wavespeed.requests] == ["/api/v3/balance"]
    no_secret_in(lines, discord_fake.token, wavespeed.api_key, WEBHOOK_SECRET, WEBHOOK_SECRET[6:])


async def test_a_refused_token_and_key_say_what_to_do(
    tmp_path, database_url: str, discord_fake: FakeDiscord, wavespeed: FakeWaveSpeed
):
    token, key = "not-the-bot-token-0123456789", "not-the-api-key-0123456789"
    env = fake_env(discord_fake, wavespeed, DATABASE_URL=database_url, DISCORD_TOKEN=token, WAVESPEED_API_KEY=key)
    status, lines = await check(env, tmp_path)

    assert status == 1
    assert line(lines, "✗ Discord token:") == (
        "✗ Discord token: refused: copy the bot token again (Developer Portal > Bot > Reset Token)"
    )
    assert (
        line(lines, "✗ WaveSpeed key:") == "✗ WaveSpeed key: refused: copy the key again (wavespeed.ai > Access Keys)"
    )
    assert line(lines, "✓ database:") and lines[-1] == "2 check(s) failed"
    no_secret_in(lines, token, key)


async def test_servers_the_bot_is_not_in_or_lacks_permissions_or_commands_in(
    tmp_path, database_url: str, discord_fake: FakeDiscord, wavespeed: FakeWaveSpeed
):
    discord_fake.bot_guilds[DEFAULT_GUILD_ID] = discord.Permissions(
        view_channel=True, send_messages=True, read_message_history=True
    ).value
    discord_fake.bot_guilds[NO_SCOPE_GUILD] = discord.Permissions(administrator=True).value
    discord_fake.no_commands_scope.add(NO_SCOPE_GUILD)
    env = fake_env(
        discord_fake,
        wavespeed,
        DATABASE_URL=database_url,
        DISCORD_GUILD_IDS=f"{DEFAULT_GUILD_ID},{NO_SCOPE_GUILD}",
        ALLOWED_GUILD_IDS=f"{DEFAULT_GUILD_ID},{STRANGER_GUILD}",
    )
    status, lines = await check(env, tmp_path)

    assert status == 1
    assert line(lines, f"✗ server {DEFAULT_GUILD_ID}:") == (
        f"✗ server {DEFAULT_GUILD_ID}: the bot is missing Embed Links, Attach Files: give its role these "
        "permissions (Server Settings > Roles)"
    )
    invite = (
        f"https://discord.com/oauth2/authorize?client_id={discord_fake.application_id}"
        "&scope=bot+applications.commands&permissions=117760"
    )
    assert line(lines, f"✗ server {STRANGER_GUILD}:") == (
        f"✗ server {STRANGER_GUILD}: the bot is not in this server: invite it with {invite}"
    )
    assert "invited without applications.commands" in line(lines, f"✗ server {NO_SCOPE_GUILD}:")
    assert lines[-1] == "3 check(s) failed"


async def test_unreachable_services_a_bad_database_and_a_malformed_secret(
    tmp_path, discord_fake: FakeDiscord, wavespeed: FakeWaveSpeed
):
    closed = free_port()
    env = fake_env(
        discord_fake,
        wavespeed,
        DISCORD_API_URL=f"http://127.0.0.1:{closed}/api/v10",
        WAVESPEED_BASE_URL=f"http://127.0.0.1:{closed}",
        DATABASE_URL=f"postgresql://bot:{DB_PASSWORD}@127.0.0.1:{closed}/imagine",
        WEBHOOK_URL="https://bot.example.com",
        WAVESPEED_WEBHOOK_SECRET="whsec_this is not base64!",
    )
    status, lines = await check(env, tmp_path)

    assert status == 1
    assert line(lines, "✗ Discord:").startswith(f"✗ Discord: cannot reach http://127.0.0.1:{closed}/api/v10")
    assert (
        line(lines, "- servers:") == "- servers: none named in DISCORD_GUILD_IDS or ALLOWED_GUILD_IDS, so none checked"
    )
    assert line(lines, "✗ WaveSpeed:").startswith(f"✗ WaveSpeed: no answer from http://127.0.0.1:{closed}")
    assert line(lines, "✗ database:").startswith(f"✗ database: cannot reach PostgreSQL at 127.0.0.1:{closed}/imagine")
    assert line(lines, "✗ webhook secret:").startswith("✗ webhook secret: not WaveSpeed's form")
    no_secret_in(lines, DB_PASSWORD, "this is not base64", discord_fake.token, wavespeed.api_key)


async def test_invalid_settings_stop_before_any_service_is_asked(tmp_path, discord_fake, wavespeed):
    env = fake_env(discord_fake, wavespeed, JOB_TIMEOUT_SECONDS="-1")
    del env["DISCORD_TOKEN"]
    status, lines = await check(env, tmp_path)

    assert status == 2
    assert lines[0].startswith("✗ settings: Configuration error")
    assert any("DISCORD_TOKEN is required" in text for text in lines)
    assert not len(discord_fake.requests) and not len(wavespeed.requests)
    no_secret_in(lines, wavespeed.api_key)
