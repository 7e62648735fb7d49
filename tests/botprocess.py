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


def fake_env(discord_fake: FakeDiscord, wavespeed: FakeWaveSpeed, **extra: str) -> dict[str, str]:
    """The environment that points a bot process at the fakes."""
    return {
        "DISCORD_TOKEN": discord_fake.token,
        "WAVESPEED_API_KEY": wavespeed.api_key,
        "WAVESPEED_BASE_URL": wavespeed.base_url,
        "DISCORD_API_URL": discord_fake.api_url,
        "DISCORD_GATEWAY_URL": discord_fake.gateway_url,
        # The intervals the in-process tests shrink too (see tests/conftest.py FAST).
        "FIRST_POLL_SECONDS": "0.3",
        "POLL_INTERVAL_SECONDS": "0.2",
        "PROGRESS_INTERVAL_SECONDS": "0.5",
        **extra,
    }


async def spawn(env: dict[str, str], cwd: Path, *, log_file: Path | None = None) -> asyncio.subprocess.Process:
    """Start `python -m bot` with only `env` for its settings (no developer's DISCORD_/WAVESPEED_ values).
    With `log_file`, stderr goes there (a busy DEBUG log would fill a pipe and block the bot)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "WAVESPEED_"))}
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
