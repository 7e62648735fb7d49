"""`python -m bot` as a real child process, for start-up, crash and shutdown tests."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.fakes.discord import FakeDiscord
from tests.fakes.wavespeed import FakeWaveSpeed

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30.0


def free_port() -> int:
    """A port on 127.0.0.1 nobody listens on right now (for the bot's webhook receiver)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# Every cost limit off, for runs that send bursts no limit is under test in (with every limit off,
# admission writes a burst's jobs in parallel, without its lock).
NO_LIMITS = {
    "USER_MAX_ACTIVE_IMAGES": "0",
    "USER_WINDOW_IMAGES": "0",
    "GUILD_DAILY_IMAGES": "0",
    "GLOBAL_DAILY_IMAGES": "0",
}


def fake_env(discord_fake: FakeDiscord, wavespeed: FakeWaveSpeed, *, fast: bool = True, **extra: str) -> dict[str, str]:
    """The environment that points a bot process at the fakes. `fast`: the intervals the
    in-process tests shrink too (see tests/conftest.py FAST); the benchmark keeps the defaults."""
    shrunk = {"FIRST_POLL_SECONDS": "0.3", "POLL_INTERVAL_SECONDS": "0.25", "PROGRESS_INTERVAL_SECONDS": "0.5"}
    return {
        # The HTTP server (metrics, health, webhook) on loopback at a free port, unless a test names one.
        "HTTP_HOST": "127.0.0.1",
        "HTTP_PORT": "0",
        "DISCORD_TOKEN": discord_fake.token,
        "WAVESPEED_API_KEY": wavespeed.api_key,
        "WAVESPEED_BASE_URL": wavespeed.base_url,
        "DISCORD_API_URL": discord_fake.api_url,
        "DISCORD_GATEWAY_URL": discord_fake.gateway_url,
        **(shrunk if fast else {}),
        **extra,
    }


async def spawn(env: dict[str, str], cwd: Path, *, log_file: Path | None = None) -> asyncio.subprocess.Process:
    """Start `python -m bot` with only `env` for its settings (no developer's DISCORD_/WAVESPEED_ values,
    nor DATABASE_URL: a test passes its `database_url` fixture, or means the default).
    With `log_file`, stderr goes there (a busy DEBUG log would fill a pipe and block the bot)."""
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "WAVESPEED_")) and k != "DATABASE_URL"
    }
    stderr = log_file.open("ab") if log_file else asyncio.subprocess.PIPE
    try:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            cwd=cwd,
            env={**clean, "PYTHONPATH": str(ROOT), **env},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
        )
    finally:
        if log_file and not isinstance(stderr, int):
            stderr.close()


@dataclass
class BotProcess:
    """One bot, started and restarted on the same database, logging to `tmp/bot.log`."""

    discord: FakeDiscord
    env: dict[str, str]
    cwd: Path
    process: asyncio.subprocess.Process | None = None
    starts: int = 0
    exit_codes: list[int] = field(default_factory=list)

    @property
    def log_file(self) -> Path:
        return self.cwd / "bot.log"

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    async def start(self) -> None:
        assert self.process is None, "already running"
        self.discord.identified.clear()
        self.process = await spawn(self.env, self.cwd, log_file=self.log_file)
        self.starts += 1
        identified = asyncio.create_task(self.discord.identified.wait())
        exited = asyncio.create_task(self.process.wait())
        await asyncio.wait({identified, exited}, timeout=START_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        identified.cancel()
        exited.cancel()
        if not self.discord.identified.is_set():
            raise AssertionError(f"the bot did not connect (start {self.starts}):\n{self.log()[-3000:]}")

    async def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed; what survives is what was on disk."""
        await self._end(signal.SIGKILL)

    async def terminate(self, *, timeout: float = START_TIMEOUT) -> int:
        """SIGTERM, as `docker stop` sends; returns the exit code."""
        return await self._end(signal.SIGTERM, timeout=timeout)

    async def _end(self, signum: int, *, timeout: float = START_TIMEOUT) -> int:
        assert self.process is not None, "not running"
        self.process.send_signal(signum)
        code = await asyncio.wait_for(self.process.wait(), timeout)
        self.exit_codes.append(code)
        self.process = None
        return code

    async def cleanup(self) -> None:
        if self.process is not None and self.process.returncode is None:
            await self.kill()


# -- several processes on one database ------------------------------------------------------------


def shard_sessions(fake: FakeDiscord, shard: int) -> set[object]:
    """The live gateway sessions that identified as `shard` on the fake Discord (its own table of
    identified sockets, the one it routes a guild's events by)."""
    return {ws for ws, (shard_id, _count) in fake._shards.items() if shard_id == shard and not ws.closed}


@dataclass
class BotCluster:
    """`count` bot processes on one database: process i runs shard i of `count` (SHARD_COUNT and
    SHARD_IDS), in its own directory `root/bot{i}` with its own `bot.log`. A process counts as
    started once the fake Discord has a new gateway session identified as its shard (the fake's
    `identified` event is set by any process's identify, so it cannot tell them apart)."""

    discord: FakeDiscord
    env: dict[str, str]
    root: Path
    count: int = 3
    bots: list[BotProcess] = field(default_factory=list)

    def __post_init__(self) -> None:
        for shard in range(self.count):
            cwd = self.root / f"bot{shard}"
            cwd.mkdir(parents=True, exist_ok=True)
            env = {**self.env, "SHARD_COUNT": str(self.count), "SHARD_IDS": str(shard)}
            self.bots.append(BotProcess(self.discord, env, cwd))

    def configure(self, **values: str) -> None:
        """Set environment variables for every process's next start."""
        for bot in self.bots:
            bot.env.update(values)

    async def start(self) -> None:
        """Start every process at once; returns when each has identified as its shard."""
        await asyncio.gather(*(self.start_one(shard) for shard in range(self.count)))

    async def start_one(self, shard: int) -> None:
        """Start (or start again) the process that runs `shard`; returns once it identified."""
        bot = self.bots[shard]
        assert bot.process is None, f"shard {shard} is already running"
        before = shard_sessions(self.discord, shard)
        process = bot.process = await spawn(bot.env, bot.cwd, log_file=bot.log_file)
        bot.starts += 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        while not shard_sessions(self.discord, shard) - before:  # the fake has no event per shard
            if process.returncode is not None or loop.time() > deadline:
                raise AssertionError(
                    f"shard {shard} did not connect (start {bot.starts}, exit code {process.returncode}):\n"
                    f"{bot.log()[-3000:]}"
                )
            await asyncio.sleep(0.05)

    def pid(self, shard: int) -> int:
        process = self.bots[shard].process
        assert process is not None, f"shard {shard} is not running"
        return process.pid

    def logs(self) -> list[str]:
        return [bot.log() for bot in self.bots]

    async def cleanup(self) -> None:
        await asyncio.gather(*(bot.cleanup() for bot in self.bots))
