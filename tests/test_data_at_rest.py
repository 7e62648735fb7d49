"""The database file at rest: owner-only whatever the umask, and no finished job's interaction token
or pruned job's prompt left behind in its free space."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.jobs.model import NewJob
from bot.params import ImagineParams
from bot.storage.sqlite import SqliteStorage
from tests.fakes.discord_payloads import random_token

pytestmark = pytest.mark.sqlite_only  # the SQLite file, its -wal and -shm and their free pages


@pytest.fixture
def sqlite_default_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start every connection with secure_delete off, as SQLite ships it. (Debian builds turn it on
    by default, so on this machine's SQLite the tests would pass whatever SqliteStorage.open asks for.)"""
    connect = sqlite3.connect

    def connect_without_secure_delete(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        connection: sqlite3.Connection = connect(*args, **kwargs)
        connection.execute("PRAGMA secure_delete=OFF")
        return connection

    monkeypatch.setattr(sqlite3, "connect", connect_without_secure_delete)


@pytest.fixture(params=[0o022, 0o000], ids=["umask022", "umask000"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """The process umask for one test (a tests worker runs one test at a time)."""
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def new_job(interaction_id: int, *, token: str = "", prompt: str = "a cat", created_at: float | None = None) -> NewJob:
    return NewJob(
        interaction_id=interaction_id,
        interaction_token=token,
        application_id=1310000000000000001,
        guild_id=1310000000000000002,
        channel_id=1310000000000000100,
        user_id=1310000000000000200,
        created_at=time.time() if created_at is None else created_at,
        params=ImagineParams(prompt=prompt, seed=7, seed_was_random=False),
        file_limit=10 * 1024 * 1024,
    )


async def test_the_database_its_wal_and_shm_are_owner_only_whatever_the_umask(tmp_path, umask):
    folder = tmp_path / "data" / "nested"
    path = folder / "bot.db"
    given = mode(tmp_path)
    async with await SqliteStorage.open(str(path)) as store:
        await store.create_job(new_job(1, token=random_token()))  # a write: the WAL exists now
        wal, shm = path.with_name("bot.db-wal"), path.with_name("bot.db-shm")
        assert wal.stat().st_size > 0 and shm.exists()
        assert {p.name: oct(mode(p)) for p in (path, wal, shm)} == {p.name: "0o600" for p in (path, wal, shm)}
    # The folders the bot made are private; the one that was already there is not touched.
    assert oct(mode(folder)) == oct(mode(folder.parent)) == "0o700"
    assert mode(tmp_path) == given


async def test_an_existing_folder_is_left_alone_and_an_older_readable_database_is_tightened(tmp_path, umask):
    """A database (and a WAL a crash left behind) from before this fix was 0644 under umask 022."""
    shared = tmp_path / "volume"
    shared.mkdir()
    os.chmod(shared, 0o755)
    original, path = tmp_path / "old.db", shared / "bot.db"
    writer = sqlite3.connect(original)
    try:
        writer.execute("PRAGMA journal_mode=WAL")
        writer.execute("PRAGMA wal_autocheckpoint=0")  # keep the data in the WAL, as a crash would
        writer.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")  # schema v1
        writer.execute("PRAGMA user_version = 1")
        writer.execute("INSERT INTO meta VALUES ('k', 'from before')")
        writer.commit()
        for suffix in ("", "-wal"):  # a copy taken while it is open: as if the process had been killed
            shutil.copyfile(f"{original}{suffix}", f"{path}{suffix}")
            os.chmod(f"{path}{suffix}", 0o644)
    finally:
        writer.close()

    async with await SqliteStorage.open(str(path)) as store:
        assert await store.get_meta("k") == "from before"  # the WAL was still read
        for file in (path, path.with_name("bot.db-wal"), path.with_name("bot.db-shm")):
            assert oct(mode(file)) == "0o600", file.name
    assert oct(mode(shared)) == "0o755"  # the host's folder, the host's choice


async def leftovers(path: Path, token: str, prompts: list[str], *, secure_delete: bool) -> bytes:
    """Run jobs the way the bot does (token nulled when a job ends, old jobs pruned), checkpoint,
    and return what is on disk: the database file and whatever WAL is left."""
    async with await SqliteStorage.open(str(path)) as store:
        if not secure_delete:
            await store.execute("PRAGMA secure_delete=OFF")  # what the bot did before
        jobs = store
        old = time.time() - 90 * 86400
        for n, prompt in enumerate(prompts, start=2):
            job = await jobs.create_job(new_job(n, prompt=prompt, created_at=old))
            await jobs.cancel(job.id, finished_at=old)
        finished = await jobs.create_job(new_job(1, token=token, prompt="a kept prompt"))
        await jobs.fail(finished.id, outcome="failed", detail="failed", finished_at=time.time())
        assert (await jobs.get_job(finished.id)).interaction_token == ""
        assert await jobs.prune(older_than_days=30, now=time.time()) == len(prompts)
        await store.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return on_disk(path)


def on_disk(path: Path) -> bytes:
    """The database file and whatever WAL is beside it."""
    wal = path.with_name(path.name + "-wal")
    return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def pieces(token: str, size: int = 16) -> list[bytes]:
    """Every `size`-character window of the token's random part: a freed cell keeps its bytes, but
    SQLite writes a 4-byte free-block header into it or reuses its tail, so a token can survive cut."""
    secret = token.removeprefix("aW50ZXJhY3Rpb246")  # the part every interaction token shares
    return [secret[i : i + size].encode() for i in range(len(secret) - size + 1)]


async def test_finished_jobs_leave_no_token_or_prompt_in_the_file(tmp_path, sqlite_default_off):
    token = random_token()
    prompts = [f"a distinctive prompt number {n}: a heron in a phone booth" for n in range(3)]
    on_disk = await leftovers(tmp_path / "bot.db", token, prompts, secure_delete=True)
    assert not [piece for piece in pieces(token) if piece in on_disk]
    assert not [p for p in prompts if p.encode() in on_disk]
    assert b"a kept prompt" in on_disk  # the check reads the right file: live rows are there

    # The same jobs without secure_delete: the freed bytes stay readable in the file.
    control = await leftovers(tmp_path / "control.db", token, prompts, secure_delete=False)
    assert [piece for piece in pieces(token) if piece in control]
    assert [p for p in prompts if p.encode() in control]


async def test_secure_delete_is_on_for_the_bots_connection(tmp_path, sqlite_default_off):
    async with await SqliteStorage.open(str(tmp_path / "bot.db")) as store:
        rows = await store.execute("PRAGMA secure_delete")
        assert [dict(r) for r in rows] == [{"secure_delete": 1}]
