"""Fixtures: the fake Discord and WaveSpeed servers, and the real bot started through `serve()`.

`serve()` is what `python -m bot` runs after reading the settings, so these tests drive the real
discord.py client, the real aiohttp session and the real database against servers on 127.0.0.1,
and assert on what those servers received.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
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
    "poll_interval_seconds": 0.25,  # the schedule's floor
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
def make_settings(database_url: str, discord_fake: FakeDiscord, wavespeed: FakeWaveSpeed) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "_env_file": None,  # never read a developer's own .env
            "discord_token": discord_fake.token,
            "wavespeed_api_key": wavespeed.api_key,
            "wavespeed_base_url": wavespeed.base_url,
            "discord_api_url": discord_fake.api_url,
            "discord_gateway_url": discord_fake.gateway_url,
            "database_url": database_url,
            "job_timeout_seconds": 30,
            "log_level": "DEBUG",
            "http_host": "127.0.0.1",  # the HTTP server (metrics, health): loopback, any free port
            "http_port": 0,
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
    ports: list[int] = field(default_factory=list)  # where its HTTP server listens, once it does

    @property
    def http_url(self) -> str:
        """The HTTP server's base URL (metrics, health, the webhook)."""
        assert self.ports, "the HTTP server has not started"
        return f"http://127.0.0.1:{self.ports[-1]}"

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
    "locale",
    "guild_locale",
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
        ports: list[int] = []
        task = asyncio.create_task(serve(settings, stop=stop_event, on_listening=ports.append))
        bot = RunningBot(settings, discord_fake, wavespeed, task, stop_event, ports)
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


# -- which database the bot runs on in every test that starts it: TEST_DATABASE --------------------

DATABASES = ("sqlite", "postgresql")
SQLITE_ONLY = "sqlite_only: about SQLite itself, not run under TEST_DATABASE=postgresql"


def selected_database() -> str:
    """TEST_DATABASE: `sqlite` (the default) or `postgresql` (a fresh database on TEST_POSTGRES_URL's server)."""
    return os.environ.get("TEST_DATABASE") or "sqlite"


def pytest_configure(config: pytest.Config) -> None:
    if selected_database() not in DATABASES:
        raise pytest.UsageError(f"TEST_DATABASE={selected_database()!r}: expected one of {', '.join(DATABASES)}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if selected_database() != "sqlite":
        for item in items:
            if item.get_closest_marker("sqlite_only"):
                item.add_marker(pytest.mark.skip(reason=SQLITE_ONLY))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Under TEST_DATABASE=postgresql REQUIRE_POSTGRES=1 (CI) every test but the SQLite-only ones is a
    PostgreSQL test: one that skips, for whatever reason, fails instead, so CI cannot pass without it."""
    from tests import pg

    report: pytest.TestReport = yield
    if (
        report.skipped
        and not hasattr(report, "wasxfail")
        and selected_database() == "postgresql"
        and pg.required()
        and not item.get_closest_marker("sqlite_only")
    ):
        report.outcome = "failed"
        report.longrepr = f"skipped, but TEST_DATABASE=postgresql REQUIRE_POSTGRES=1 runs it: {_skip_reason(report)}"
    return report


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The DATABASE_URL of every bot a test starts, in process or as `python -m bot`: `tmp_path/bot.db`,
    or under TEST_DATABASE=postgresql a fresh PostgreSQL database (`postgres_url`: without a server
    the test is skipped with the same one line, or fails under REQUIRE_POSTGRES=1)."""
    if selected_database() == "postgresql":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return f"sqlite:///{tmp_path / 'bot.db'}"


def _skip_reason(report: pytest.TestReport) -> str:
    return report.longrepr[2].removeprefix("Skipped: ") if isinstance(report.longrepr, tuple) else ""


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One line saying why the PostgreSQL tests were skipped, even under `-q` and `-n` (pytest puts
    a fixture's skip at each test, so `-rs` would repeat it per test and plain `-q` not show it);
    and one for the SQLite-only tests a PostgreSQL run leaves out."""
    from tests import pg

    reasons: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        reason = _skip_reason(report)
        if reason.startswith((pg.UNREACHABLE, SQLITE_ONLY)):
            reasons[reason] = reasons.get(reason, 0) + 1
    for reason, count in reasons.items():
        what = "SQLite-only" if reason == SQLITE_ONLY else "PostgreSQL"
        terminalreporter.write_line(f"{count} {what} tests skipped: {reason}", yellow=True)
