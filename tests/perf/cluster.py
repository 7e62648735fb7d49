"""The benchmark's bot rows, beyond `tests.botprocess`: each process's settings, a fresh PostgreSQL
database, guilds that map to every shard, per-process figures, and the takeover of a killed
process's jobs.

Takeover: right before one process is SIGKILLed, the jobs it owns (unfinished, `owner` naming its
pid) are read from the database; the measurement is the time from the kill to the delivery of the
last of them, as the fake Discord recorded it, on the fakes' clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import signal
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from bot.jobs.model import TERMINAL, JobState
from tests import pg
from tests.botprocess import NO_LIMITS, BotProcess, fake_env, free_port
from tests.fakes.discord import DEFAULT_GUILD_ID, FakeDiscord
from tests.fakes.wavespeed import FakePrediction, FakeWaveSpeed

RUNNING = (JobState.SUBMITTING.value, JobState.SUBMITTED.value)
LEASE_SECONDS = 10.0  # the bot's default, set explicitly so the takeover figure says what it assumes


@contextlib.asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """A new, empty database beside TEST_POSTGRES_URL's, dropped after; exits with why if there is no server."""
    server = pg.server_url()
    if (error := await pg.unreachable(server)) is not None:
        raise SystemExit(pg.unreachable_reason(server, error))
    database = await pg.create_database(server)
    try:
        yield database
    finally:
        await pg.drop_database(server, database)


def bot_env(
    discord_fake: FakeDiscord, wavespeed: FakeWaveSpeed, *, database: str, cap: int, mode: str, shard: tuple[int, int]
) -> dict[str, str]:
    """One process's settings; `shard` is (this process's shard, the count), (0, 1) for a lone process."""
    env = fake_env(  # the production intervals: the benchmark measures the bot as hosts run it
        discord_fake,
        wavespeed,
        fast=False,
        DATABASE_URL=database,
        MAX_CONCURRENT_JOBS=str(cap),
        LEASE_SECONDS=f"{LEASE_SECONDS:g}",
        JOB_TIMEOUT_SECONDS="300",
        LOG_LEVEL="INFO",
        **NO_LIMITS,
    )
    if shard[1] > 1:
        env.update(SHARD_COUNT=str(shard[1]), SHARD_IDS=str(shard[0]))
    if mode == "sync":
        env.update(WAVESPEED_SYNC_MODE="true")
    if mode == "push":
        port = free_port()
        env.update(
            WEBHOOK_URL=f"http://127.0.0.1:{port}",
            HTTP_HOST="127.0.0.1",
            HTTP_PORT=str(port),
            WAVESPEED_WEBHOOK_SECRET=wavespeed.webhook_secret,
        )
    return env


def shard_guilds(count: int) -> list[int]:
    """One guild per shard: Discord (and the fake gateway) send a guild's events to shard
    `(guild_id >> 22) % count`, so consecutive values of `guild_id >> 22` cover every shard."""
    guilds = [DEFAULT_GUILD_ID + (k << 22) for k in range(count)]
    assert {(g >> 22) % count for g in guilds} == set(range(count))
    return guilds


def peak_rss_mb(pid: int) -> float | None:
    """The process's peak resident set (VmHWM), Linux only."""
    found = re.search(r"VmHWM:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())
    return int(found[1]) / 1024 if found else None


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the process has used so far, Linux only: what a burst costs the bot,
    whatever else the machine runs meanwhile."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_jiffies() -> tuple[int, int]:
    """(busy, all) clock ticks of every core since boot, from /proc/stat: what the whole machine did,
    this benchmark's processes and anything else running."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return sum(ticks) - idle, sum(ticks)


@dataclass
class BurstCost:
    """Where the CPU went while a burst was being answered: from the first INTERACTION_CREATE sent
    to the last answer the fake received. The bots' CPU per answer is what bounds how fast any
    burst can be answered on this machine, whatever else runs on it."""

    bot_pids: list[int]
    began: float
    bots_before: list[float]
    harness_before: float
    machine_before: tuple[int, int]
    answers: int = 0
    seconds: float = 0.0
    bots_cpu: float = 0.0  # core-seconds, every bot process
    harness_cpu: float = 0.0  # this process: the fake Discord, gateway and WaveSpeed
    machine_busy: float = 0.0  # core-seconds busy on the whole machine
    cores: int = 0

    @classmethod
    def start(cls, bot_pids: list[int]) -> BurstCost:
        return cls(
            bot_pids,
            time.monotonic(),
            [cpu_seconds(pid) for pid in bot_pids],
            cpu_seconds(os.getpid()),
            machine_jiffies(),
        )

    async def until_answered(self, fake: FakeDiscord, count: int, *, timeout: float, since: int = 0) -> None:
        """Wait until `count` answers (callbacks) reached the fake after its first `since` requests
        (those of a warm-up), then take the figures."""
        seen = since
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                for _ in itertools.count():  # scans only new requests: the log is thousands long
                    requests = fake.requests
                    self.answers += sum(requests[i].path.endswith("/callback") for i in range(seen, len(requests)))
                    seen = len(requests)
                    if self.answers >= count:
                        break
                    await asyncio.sleep(0.02)
        self.seconds = time.monotonic() - self.began
        self.bots_cpu = sum(
            cpu_seconds(pid) - before for pid, before in zip(self.bot_pids, self.bots_before, strict=True)
        )
        self.harness_cpu = cpu_seconds(os.getpid()) - self.harness_before
        self.cores = os.cpu_count() or 1
        self.machine_busy = (machine_jiffies()[0] - self.machine_before[0]) / os.sysconf("SC_CLK_TCK")

    @property
    def bot_ms_per_answer(self) -> float:
        return 1000 * self.bots_cpu / max(1, self.answers)

    def summary(self) -> str:
        return (
            f"{self.answers} answers in {self.seconds:.2f} s; bot process(es) used {self.bots_cpu:.2f} core-s "
            f"({self.bot_ms_per_answer:.2f} ms per answer), the fakes {self.harness_cpu:.2f} core-s "
            f"({1000 * self.harness_cpu / max(1, self.answers):.2f} ms per answer); the machine was busy "
            f"{self.machine_busy:.2f} of {self.cores * self.seconds:.2f} core-s "
            f"({100 * self.machine_busy / max(1e-9, self.cores * self.seconds):.0f} %)"
        )


def loop_lag_p99_ms(log: str) -> float | None:
    """What `bot.metrics` logged at shutdown, read from that process's own log: the last such line
    (a log that was appended to by an earlier start holds that start's line first); None for a
    process that never shut down (killed)."""
    lags = re.findall(r"event loop lag: .*?p99 ([\d.]+) ms", log)
    return float(lags[-1]) if lags else None


def max_in_flight(predictions: list[FakePrediction]) -> int:
    """The most predictions queued or running on the fake WaveSpeed at one moment (a sweep; the
    fake's own `max_in_flight` is quadratic). An end at the same instant as a start comes first."""
    events = sorted([(p.created_at, 1) for p in predictions] + [(p.completed_at, -1) for p in predictions])
    most = current = 0
    for _, step in events:
        current += step
        most = max(most, current)
    return most


async def ended_without_images(database: str) -> set[int]:
    """Interaction ids of the jobs that ended without images (failed, unconfirmed, cancelled): a
    job caught mid-submit by a kill is never sent again, and the fake sees no end for it."""
    ends = sorted(s.value for s in TERMINAL if s is not JobState.DELIVERED)
    if database.startswith("sqlite:///"):

        def read() -> set[int]:
            uri = f"file:{database.removeprefix('sqlite:///')}?mode=ro"
            with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as db:
                marks = ", ".join("?" * len(ends))
                return {
                    int(r[0]) for r in db.execute(f"SELECT interaction_id FROM jobs WHERE state IN ({marks})", ends)
                }

        try:
            return await asyncio.to_thread(read)
        except sqlite3.Error:  # not created yet, or busy: next time
            return set()
    connection = await asyncpg.connect(database, timeout=pg.CONNECT_TIMEOUT)
    try:
        rows = await connection.fetch("SELECT interaction_id FROM jobs WHERE state = ANY($1::text[])", ends)
    finally:
        await connection.close()
    return {int(r["interaction_id"]) for r in rows}


class Deliveries:
    """Which jobs' images reached the fake, and when (the first PATCH with files on the token's
    webhook). A job also ends when its callback was answered 404 (too late) or when the database
    says it ended without images; both count as failed. Scans only new requests, every 100 ms:
    `wait_for` re-reads the whole log on every request, which at thousands of jobs would slow the
    fakes (and so the measurement) down."""

    def __init__(self, fake: FakeDiscord, tokens: dict[int, str], database: str) -> None:
        """`tokens`: interaction id -> token, for every job of the row."""
        self.fake, self.tokens, self.database = fake, tokens, database
        self.waiting, self.total = set(tokens.values()), len(tokens)
        self.delivered_at: dict[int, float] = {}  # interaction id -> when the fake received its images
        self.without_images: set[int] = set()
        self._ids = {token: i for i, token in tokens.items()}
        self._seen = 0

    @property
    def ended(self) -> int:
        return self.total - len(self.waiting)

    def scan(self) -> None:
        requests = self.fake.requests
        new = [requests[i] for i in range(self._seen, len(requests))]
        self._seen += len(new)
        for r in new:
            delivered = r.method == "PATCH" and r.files and r.path.startswith("/webhooks/")
            unanswered = r.path.endswith("/callback") and r.status == 404
            # A private answer (flags 64) is a refusal ("busy, try again"): no job, counted as failed.
            refused = r.path.endswith("/callback") and bool(((r.json or {}).get("data") or {}).get("flags", 0) & 64)
            if (delivered or unanswered or refused) and (i := self._ids.get(r.path.split("/")[3])) is not None:
                self.waiting.discard(self.tokens[i])
                if delivered:
                    self.delivered_at.setdefault(i, r.at)

    async def until(self, count: int, *, timeout: float) -> bool:
        """Until `count` jobs ended; False if `timeout` passed first (the rest count as failed)."""
        try:
            async with asyncio.timeout(timeout):
                for tick in itertools.count(1):
                    if self.ended >= count:
                        break
                    await asyncio.sleep(0.1)
                    self.scan()
                    if tick % 20 == 0:  # every 2 s
                        ended = await ended_without_images(self.database)
                        self.without_images |= ended - self.delivered_at.keys()
                        self.waiting -= {self.tokens[i] for i in ended if i in self.tokens}
        except TimeoutError:
            print(f"    timed out after {timeout:.0f} s with {self.total - self.ended} job(s) not ended", flush=True)
            return False
        return True


@dataclass
class Takeover:
    """One process killed while it owned `owned` (interaction id -> state at the kill).

    Taken over means: every job it owned has a live owner again (or has ended), and every one it had
    started is delivered. Its waiting jobs are adopted at once but start in their turn in the one
    line, like everyone's: when they are delivered depends on the queue, not on the takeover, so
    their delivery is reported beside the figure, not in it."""

    pid: int
    killed_at: float
    owned: dict[int, str]
    seconds: float | None = None  # the takeover as above; None: some job never ended
    summary: str = ""
    adopted_at: dict[int, float] = field(default_factory=dict)  # interaction id -> when another process owned it
    _watch: asyncio.Task[None] | None = None

    def watch_adoption(self, database: str) -> None:
        self._watch = asyncio.create_task(self._adoptions(database))

    async def _adoptions(self, database: str) -> None:
        """Poll who owns the killed process's jobs until every one has another owner or ended."""
        connection = await asyncpg.connect(database, timeout=pg.CONNECT_TIMEOUT)
        try:
            while len(self.adopted_at) < len(self.owned):
                rows = await connection.fetch(
                    "SELECT interaction_id, owner FROM jobs WHERE interaction_id = ANY($1::bigint[])",
                    [i for i in self.owned if i not in self.adopted_at],
                )
                now = time.monotonic()
                for r in rows:
                    if r["owner"] is None or r["owner"].rsplit(":", 2)[1] != str(self.pid):
                        self.adopted_at[int(r["interaction_id"])] = now
                await asyncio.sleep(0.1)
        finally:
            await connection.close()

    async def measure(self, deliveries: Deliveries) -> None:
        if self._watch is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._watch, timeout=5)
        started = {i for i, state in self.owned.items() if state != JobState.QUEUED.value}
        late = {i: deliveries.delivered_at[i] - self.killed_at for i in self.owned if i in deliveries.delivered_at}
        without = self.owned.keys() & deliveries.without_images
        missing = len(self.owned) - len(late) - len(without)
        adopted = max((at - self.killed_at for at in self.adopted_at.values()), default=0.0)
        started_delivered = max((late[i] for i in started if i in late), default=0.0)
        last = max(late.values(), default=float("nan"))
        unadopted = len(self.owned) - len(self.adopted_at)
        self.seconds = None if missing or unadopted else max(adopted, started_delivered)
        self.summary = (
            f"killed pid {self.pid} owning {len(self.owned)} unfinished job(s) ({len(started)} started, "
            f"{len(self.owned) - len(started)} waiting): all adopted {adopted:.1f} s after the kill, "
            f"the started ones delivered by {started_delivered:.1f} s; the last of all (waiting ones start in "
            f"their turn) delivered {last:.1f} s after; {len(without)} ended without images (caught mid-submit: "
            f"never sent again), {missing} never ended, {unadopted} never adopted"
        )


async def owned_jobs(database: str, pid: int) -> dict[int, str]:
    """The unfinished jobs process `pid` owns (owner is `host:pid:random`): interaction id -> state."""
    connection = await asyncpg.connect(database, timeout=pg.CONNECT_TIMEOUT)
    try:
        rows = await connection.fetch(
            "SELECT interaction_id, state, owner FROM jobs WHERE owner IS NOT NULL AND NOT state = ANY($1::text[])",
            [s.value for s in TERMINAL],
        )
    finally:
        await connection.close()
    return {int(r["interaction_id"]): str(r["state"]) for r in rows if r["owner"].rsplit(":", 2)[1] == str(pid)}


async def kill_owner(bot: BotProcess, database: str) -> Takeover:
    """Freeze `bot` (SIGSTOP: from here it renews and changes nothing), read the jobs it owns, then
    SIGKILL it. The takeover is timed from the freeze, when the process stopped working."""
    assert bot.process is not None
    pid = bot.process.pid
    bot.process.send_signal(signal.SIGSTOP)
    stopped_at = time.monotonic()
    owned = await owned_jobs(database, pid)
    await bot.kill()
    takeover = Takeover(pid, stopped_at, owned)
    takeover.watch_adoption(database)
    return takeover
