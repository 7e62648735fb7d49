"""Fixtures: the fake Discord and WaveSpeed servers, and the real bot started through `serve()`.

`serve()` is what `python -m bot` runs after reading the settings, so these tests drive the real
discord.py client, the real aiohttp session and the real database against servers on 127.0.0.1,
and assert on what those servers received.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from bot.config import Settings, load_settings
from bot.main import serve
from tests.fakes.discord import FakeDiscord
from tests.fakes.recorder import Recorded
from tests.fakes.wavespeed import FakeWaveSpeed
from tests.helpers import wait_final_edit

START_TIMEOUT = 15.0
# Intervals shrunk for the tests (the fake WaveSpeed finishes in about 0.35 s): the behaviour is the
# same, the waiting is not. A test about one of them sets its own value.
FAST: dict[str, Any] = {
    "first_poll_seconds": 0.3,
    "poll_interval_seconds": 0.2,
    "progress_interval_seconds": 0.5,
    "shutdown_grace_seconds": 1.0,
}


@pytest.fixture
async def wavespeed() -> AsyncIterator[FakeWaveSpeed]:
    fake = FakeWaveSpeed()
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
async def discord_fake() -> AsyncIterator[FakeDiscord]:
    fake = FakeDiscord()
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
def make_settings(tmp_path, discord_fake: FakeDiscord, wavespeed: FakeWaveSpeed) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "_env_file": None,  # never read a developer's own .env
            "discord_token": discord_fake.token,
            "wavespeed_api_key": wavespeed.api_key,
            "wavespeed_base_url": wavespeed.base_url,
            "discord_api_url": discord_fake.api_url,
            "discord_gateway_url": discord_fake.gateway_url,
            "database_url": f"sqlite:///{tmp_path / 'bot.db'}",
            "job_timeout_seconds": 30,
            "log_level": "DEBUG",
            **FAST,
        }
        values.update(overrides)
        return load_settings(**values)

    return make


@dataclass
class RunningBot:
    settings: Settings
    discord: FakeDiscord
    wavespeed: FakeWaveSpeed
    task: asyncio.Task[None]
    stop_event: asyncio.Event

    async def imagine(self, **options: Any) -> dict[str, Any]:
        """Dispatch an /imagine interaction; returns its payload (token, id) for the assertions."""
        interaction_kwargs = {k: options.pop(k) for k in list(options) if k in INTERACTION_KWARGS}
        payload = self.discord.interaction("imagine", options, **interaction_kwargs)
        await self.discord.dispatch_interaction(payload)
        return payload

    async def final_edit(self, payload: dict[str, Any], *, timeout: float = 20.0) -> Recorded:
        """The edit of the placeholder that ends the job: a result (files) or a failure."""
        return await wait_final_edit(self.discord, payload["token"], timeout=timeout)

    async def stop(self) -> None:
        self.stop_event.set()
        await asyncio.wait_for(self.task, START_TIMEOUT)


INTERACTION_KWARGS = {
    "user_id",
    "guild_id",
    "channel_id",
    "channel_nsfw",
    "created_at",
    "attachment_size_limit",
    "member_permissions",
}


@pytest.fixture
async def start_bot(
    make_settings: Callable[..., Settings], discord_fake: FakeDiscord, wavespeed: FakeWaveSpeed
) -> AsyncIterator[Callable[..., Any]]:
    """Start the real bot (as many times as a test likes); every one is stopped at teardown."""
    running: list[RunningBot] = []

    async def start(**overrides: Any) -> RunningBot:
        settings = make_settings(**overrides)
        stop_event = asyncio.Event()
        discord_fake.identified.clear()
        task = asyncio.create_task(serve(settings, stop=stop_event))
        bot = RunningBot(settings, discord_fake, wavespeed, task, stop_event)
        running.append(bot)
        identified = asyncio.create_task(discord_fake.identified.wait())
        await asyncio.wait({task, identified}, timeout=START_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        if not identified.done():
            identified.cancel()
            if task.done():
                task.result()  # the bot's own start-up error
            raise AssertionError("the bot did not identify on the fake gateway in time")
        return bot

    yield start
    for bot in running:
        if not bot.task.done():
            bot.stop_event.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(bot.task, START_TIMEOUT)


@pytest.fixture
def log_lines(caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    """Every log line the bot wrote, formatted with its traceback, at DEBUG level."""
    caplog.set_level(logging.DEBUG)
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    return lambda: [formatter.format(record) for record in caplog.records]


# -- PostgreSQL (tests/pg.py) ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_reachability() -> dict[str, str | None]:
    """Whether each server URL answered, asked once per session: an unreachable server then costs
    one connection timeout, and every skipped test gives the same reason (pytest folds them into
    one line)."""
    return {}


@pytest.fixture
async def postgres_url(postgres_reachability: dict[str, str | None]) -> AsyncIterator[str]:
    """A fresh, empty database for this test on the TEST_POSTGRES_URL server; dropped afterwards.
    Without a server: skipped, or failed when REQUIRE_POSTGRES=1 (CI)."""
    from tests import pg  # here, so this section is all the PostgreSQL tests add to the file

    server = pg.server_url()
    if server not in postgres_reachability:
        postgres_reachability[server] = await pg.unreachable(server)
    error = postgres_reachability[server]
    if error is not None:
        reason = pg.unreachable_reason(server, error)
        if pg.required():
            pytest.fail(f"{reason} (REQUIRE_POSTGRES=1)", pytrace=False)
        pytest.skip(reason)
    url = await pg.create_database(server)
    try:
        yield url
    finally:
        await pg.drop_database(server, url)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One line saying why the PostgreSQL tests were skipped, even under `-q` and `-n` (pytest puts
    a fixture's skip at each test, so `-rs` would repeat it per test and plain `-q` not show it)."""
    from tests import pg

    reasons: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        reason = report.longrepr[2].removeprefix("Skipped: ") if isinstance(report.longrepr, tuple) else ""
        if reason.startswith(pg.UNREACHABLE):
            reasons[reason] = reasons.get(reason, 0) + 1
    for reason, count in reasons.items():
        terminalreporter.write_line(f"{count} PostgreSQL tests skipped: {reason}", yellow=True)
