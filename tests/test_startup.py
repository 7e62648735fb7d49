"""Start-up failures of `python -m bot`, as a real process: one line naming the cause and what to do,
no traceback; what may pass (a service unreachable) is retried with backoff, once logged per
attempt, and the bot comes up when the service does."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import sqlite3
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import pytest

from bot.config import load_settings
from bot.ops.startup import StartupError, open_database
from tests import dbread, pg
from tests.botprocess import BotProcess, fake_env, free_port, spawn
from tests.fakes.discord import FakeDiscord
from tests.fakes.wavespeed import FakeWaveSpeed
from tests.helpers import wait_until

ATTEMPT = re.compile(r"^(\S+ \S+) WARNING +bot\.ops\.startup: (.*); retrying in (\d+) s \(attempt (\d+)\)$", re.M)


async def finished(process: asyncio.subprocess.Process) -> tuple[int, str]:
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, stderr.decode()


def one_line(log: str) -> str:
    """The only ERROR line; and no traceback anywhere."""
    assert "Traceback" not in log, log
    [line] = [text for text in log.splitlines() if " ERROR " in text]
    return line


def attempts(log: str) -> list[tuple[datetime, str, int]]:
    return [
        (datetime.strptime(when, "%Y-%m-%d %H:%M:%S,%f"), what, int(number))
        for when, what, _, number in ATTEMPT.findall(log)
    ]


async def test_a_refused_token_is_one_line(tmp_path, database_url, discord_fake: FakeDiscord, wavespeed):
    token = "a-token-discord-does-not-know-0123456789"
    env = fake_env(discord_fake, wavespeed, DATABASE_URL=database_url, DISCORD_TOKEN=token)
    status, log = await finished(await spawn(env, tmp_path))

    assert status == 1
    assert one_line(log).endswith(
        "ERROR   bot.main: cannot start: Discord refused DISCORD_TOKEN: copy the bot token again "
        "(Developer Portal > Bot > Reset Token)"
    )
    assert token not in log and not discord_fake.identify_count


async def test_discord_unreachable_is_retried_with_backoff_until_it_answers(
    tmp_path, database_url, wavespeed: FakeWaveSpeed
):
    port, http_port = free_port(), free_port()
    discord_fake = FakeDiscord()
    api = f"http://127.0.0.1:{port}/api/v10"
    env = fake_env(discord_fake, wavespeed, DATABASE_URL=database_url, HTTP_PORT=str(http_port))
    env.update(DISCORD_API_URL=api, DISCORD_GATEWAY_URL=f"ws://127.0.0.1:{port}/gateway")
    bot = BotProcess(discord_fake, env, tmp_path)
    bot.process = await spawn(env, tmp_path, log_file=bot.log_file)
    try:
        await wait_until(lambda: len(attempts(bot.log())) >= 2, timeout=15)
        # While it waits it is alive, not ready, and says what it waits for.
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{http_port}/healthz") as answer:
                assert answer.status == 200
            async with session.get(f"http://127.0.0.1:{http_port}/readyz") as answer:
                report = await answer.json()
                assert answer.status == 503 and "cannot reach Discord" in report["checks"]["discord"]
        await discord_fake.start(port)  # Discord is back
        await asyncio.wait_for(discord_fake.identified.wait(), 30)
        assert await bot.terminate() == 0
    finally:
        await bot.cleanup()
        await discord_fake.close()
    log = bot.log()
    first, second, *_ = attempts(log)
    assert first[1] == second[1] == f"cannot reach Discord at {api} (ClientConnectorError)"
    assert (first[2], second[2]) == (1, 2)
    assert (second[0] - first[0]).total_seconds() >= 0.8  # the backoff: 1 s with jitter, then 2 s
    assert "Traceback" not in log and " ERROR " not in log
    assert "PyNaCl" not in log and "davey" not in log  # no voice, no warnings about its libraries


async def test_sigterm_while_waiting_for_wavespeed_stops_cleanly(tmp_path, database_url, discord_fake):
    closed = free_port()
    env = fake_env(discord_fake, FakeWaveSpeed(), DATABASE_URL=database_url)
    env["WAVESPEED_BASE_URL"] = f"http://127.0.0.1:{closed}"
    bot = BotProcess(discord_fake, env, tmp_path)
    bot.process = await spawn(env, tmp_path, log_file=bot.log_file)
    try:
        await wait_until(lambda: bool(attempts(bot.log())), timeout=15)
        assert await bot.terminate(timeout=10) == 0
    finally:
        await bot.cleanup()
    log = bot.log()
    assert attempts(log)[0][1].startswith(f"cannot reach WaveSpeed at http://127.0.0.1:{closed}")
    assert "stopped before start-up finished" in log and "Traceback" not in log


async def test_a_database_from_a_newer_version_is_one_line(tmp_path, database_url, discord_fake, wavespeed):
    env = fake_env(discord_fake, wavespeed, DATABASE_URL=database_url)
    first = await spawn(env, tmp_path)  # creates and migrates it
    await asyncio.wait_for(discord_fake.identified.wait(), 30)
    first.send_signal(signal.SIGTERM)
    assert (await finished(first))[0] == 0
    if dbread.is_sqlite(database_url):
        dbread.execute(database_url, "PRAGMA user_version = 99")
    else:
        dbread.execute(database_url, "UPDATE schema_version SET version = 99")

    status, log = await finished(await spawn(env, tmp_path))
    assert status == 1
    assert re.search(
        r"ERROR   bot\.main: cannot start: the database \S+ is from a newer version of the bot: the database is at "
        r"schema version 99, newer than this bot \(\d+\); run a newer version of the bot or restore a backup$",
        one_line(log),
    )


async def test_a_port_already_taken_is_one_line(tmp_path, database_url, discord_fake, wavespeed):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = fake_env(discord_fake, wavespeed, DATABASE_URL=database_url, HTTP_PORT=str(port))
        status, log = await finished(await spawn(env, tmp_path))

    assert status == 1
    assert one_line(log).endswith(
        f"cannot start: cannot listen on 127.0.0.1:{port} (Address already in use): set HTTP_PORT to a free port"
    )
    assert not discord_fake.identify_count  # nothing else was started


@pytest.mark.sqlite_only
async def test_a_sqlite_file_that_cannot_be_opened_is_one_line(tmp_path: Path, discord_fake, wavespeed):
    (tmp_path / "not-a-folder").write_text("a file where a folder should be")
    env = fake_env(discord_fake, wavespeed, DATABASE_URL=f"sqlite:///{tmp_path}/not-a-folder/bot.db")
    status, log = await finished(await spawn(env, tmp_path))

    assert status == 1
    assert "cannot start: cannot open the SQLite database" in one_line(log)
    assert "check DATABASE_URL, that its folder exists or can be created" in one_line(log)


async def test_a_python_with_an_old_sqlite_is_told_in_one_line(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 34, 1))  # Debian 11's: no RETURNING
    monkeypatch.setattr(sqlite3, "sqlite_version", "3.34.1")
    keys = {"_env_file": None, "discord_token": "d" * 24, "wavespeed_api_key": "w" * 24}
    settings = load_settings(**keys, database_url=f"sqlite:///{tmp_path}/bot.db")
    with pytest.raises(StartupError) as raised:
        await open_database(settings)
    assert str(raised.value) == (
        f"cannot open the SQLite database {tmp_path}/bot.db: SQLite 3.35 or newer is needed, and this Python has "
        "3.34.1: use the Docker image, or a Python built with a newer SQLite"
    )
    assert not (tmp_path / "bot.db").exists()  # refused before anything was created


async def test_a_postgresql_database_that_does_not_exist_is_one_line(
    tmp_path, postgres_url: str, discord_fake, wavespeed
):
    password = "pw-that-must-not-show-0123"
    parts = urlsplit(pg.database_url(postgres_url, "no_such_database_here"))
    where = f"{parts.hostname}:{parts.port or 5432}"
    missing = urlunsplit(parts._replace(netloc=f"{parts.username or 'postgres'}:{password}@{where}"))
    env = fake_env(discord_fake, wavespeed, DATABASE_URL=missing)
    status, log = await finished(await spawn(env, tmp_path))

    assert status == 1
    assert f"the database {where}/no_such_database_here does not exist: create it" in one_line(log)
    assert password not in log
