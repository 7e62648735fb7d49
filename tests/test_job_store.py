"""The SQLite job store: the state machine, its events, recovery order, retention and migrations."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import sqlite3
import time

import aiosqlite
import pytest

from bot.jobs.model import TERMINAL, TRANSITIONS, InvalidTransitionError, JobRecord, JobState, NewJob
from bot.params import ImagineParams
from bot.storage.sqlite import MIGRATIONS, SqliteStorage

S = JobState
# The SQLite backend itself (its migrations, its files, its library's memory): every verb runs on both
# backends in tests/test_storage_contract.py.
pytestmark = pytest.mark.sqlite_only


def new_job(n: int, *, created_at: float | None = None) -> NewJob:
    return NewJob(
        interaction_id=1_000_000_000_000_000_000 + n,
        interaction_token=f"token-{n}",
        application_id=1310000000000000001,
        guild_id=111111111111111111,
        channel_id=1310000000000000100,
        user_id=1310000000000000200 + n,
        created_at=time.time() if created_at is None else created_at,
        params=ImagineParams(prompt=f"prompt {n}", num_images=2, seed=42 + n, seed_was_random=False),
        file_limit=10 * 1024 * 1024,
    )


@pytest.fixture
async def jobs(tmp_path):
    async with await SqliteStorage.open(str(tmp_path / "bot.db")) as storage:
        yield storage


async def placed(jobs: SqliteStorage, n: int, **options) -> JobRecord:
    job = await jobs.create_job(new_job(n, **options))
    return await jobs.record_placeholder(job.id, 500 + n)


async def test_a_job_round_trips_and_records_every_transition(jobs: SqliteStorage):
    job = await jobs.create_job(new_job(1))
    assert (await jobs.get_job(job.id)) == job
    await jobs.record_placeholder(job.id, 555)
    claimed = await jobs.claim_next(capacity=1)
    assert claimed is not None and claimed.id == job.id and claimed.owner == jobs.owner
    await jobs.mark_submitted(job.id, prediction_id="pred-1", submitted_at=123.0)
    await jobs.mark_completed(job.id, inference_ms=2500)
    await jobs.mark_delivering(job.id)
    done = await jobs.mark_delivered(job.id, result_message_id=None, finished_at=124.0)

    assert (done.message_id, done.prediction_id, done.inference_ms, done.submitted_at) == (555, "pred-1", 2500, 123.0)
    assert done.state is S.DELIVERED and done.interaction_token == "" and done.owner is None
    await jobs.renew_leases()  # not a move: no event
    events = await jobs.job_events(job.id)
    assert [e[1] for e in events] == [
        "queued",
        "queued",
        "submitting",
        "submitted",
        "completed",
        "delivering",
        "delivered",
    ]
    assert events[0][0] is None and events[1][2] == "placeholder posted"


async def test_only_listed_transitions_are_allowed(jobs: SqliteStorage):
    queued = await jobs.create_job(new_job(1))
    with pytest.raises(InvalidTransitionError):
        await jobs.mark_submitted(queued.id, prediction_id="p", submitted_at=1.0)  # never claimed
    await jobs.record_placeholder(queued.id, 9)
    assert await jobs.claim_next(capacity=1) is not None
    with pytest.raises(InvalidTransitionError):
        await jobs.mark_delivered(queued.id, result_message_id=None, finished_at=1.0)
    await jobs.fail(queued.id, outcome="x", finished_at=1.0)
    with pytest.raises(InvalidTransitionError):
        await jobs.record_placeholder(queued.id, 9)
    assert (await jobs.get_job(queued.id)).state is S.FAILED  # unchanged by the refused moves


def test_every_state_can_fail_or_is_terminal():
    """No state can trap a job: each unfinished one has a way to fail."""
    assert all(S.FAILED in targets for state, targets in TRANSITIONS.items() if state not in TERMINAL)
    assert {S.DELIVERED, S.FAILED, S.UNCONFIRMED, S.CANCELLED} == TERMINAL


async def test_unfinished_jobs_come_back_oldest_first(jobs: SqliteStorage):
    ids = [(await placed(jobs, n)).id for n in range(4)]
    await jobs.fail(ids[1], outcome="x", finished_at=1.0)
    claimed = await jobs.claim_next(capacity=1)
    assert claimed is not None and claimed.id == ids[0]
    assert [(j.id, j.state) for j in await jobs.unfinished()] == [
        (ids[0], S.SUBMITTING),
        (ids[2], S.QUEUED),
        (ids[3], S.QUEUED),
    ]


async def test_prune_deletes_only_old_finished_jobs_and_their_events(jobs: SqliteStorage):
    old = time.time() - 40 * 86400
    old_done = await jobs.create_job(new_job(1, created_at=old))
    await jobs.fail(old_done.id, outcome="x", finished_at=old)
    old_running = await jobs.create_job(new_job(2, created_at=old))
    recent_done = await jobs.create_job(new_job(3))
    await jobs.fail(recent_done.id, outcome="x", finished_at=time.time())

    assert await jobs.prune(older_than_days=30, now=time.time()) == 1
    remaining = {j.id for j in await jobs.unfinished()} | {recent_done.id}
    assert remaining == {old_running.id, recent_done.id}
    assert await jobs.job_events(old_done.id) == []
    with pytest.raises(KeyError):
        await jobs.get_job(old_done.id)


@pytest.mark.parametrize("version", range(1, len(MIGRATIONS)))
async def test_migrates_a_database_from_an_earlier_schema_version(tmp_path, version):
    path = str(tmp_path / "bot.db")
    async with aiosqlite.connect(path) as raw:  # what an earlier bot left behind
        for script in MIGRATIONS[:version]:
            await raw.executescript(script)
        await raw.execute(f"PRAGMA user_version = {version}")
        await raw.execute("INSERT INTO meta (key, value) VALUES ('commands:1:global', 'abc')")
        if version >= 2:  # a job in flight when that bot stopped
            await raw.execute(
                "INSERT INTO jobs (interaction_id, interaction_token, application_id, user_id, created_at, params,"
                " file_limit, state, prediction_id, updated_at) VALUES (1, 't', 2, 3, 0, ?, 10, 'submitted', 'p', 0)",
                ('{"prompt": "old", "seed": 5}',),
            )
        await raw.commit()
    async with await SqliteStorage.open(path) as jobs:
        assert await jobs.schema_version() == len(MIGRATIONS)
        assert await jobs.get_meta("commands:1:global") == "abc"  # kept: no needless command re-sync
        if version >= 2:
            [old] = await jobs.unfinished()
            assert (old.state, old.prediction_id, old.params.prompt) == (S.SUBMITTED, "p", "old")
            assert (await jobs.usage_for(user_id=3, guild_id=None, now=1.0, window_seconds=10)).user_active == 1
        job = await jobs.create_job(new_job(1))
        assert job.state is S.QUEUED and job.queue_tag is not None


def sqlite_library() -> ctypes.CDLL | None:
    """The SQLite library the `sqlite3` module runs on, when it is a shared one we can ask."""
    name = ctypes.util.find_library("sqlite3")
    if name is None:
        return None
    library = ctypes.CDLL(name)
    library.sqlite3_libversion.restype = ctypes.c_char_p
    if library.sqlite3_libversion().decode() != sqlite3.sqlite_version:
        return None  # a different copy from the one in use: its counters would say nothing
    library.sqlite3_memory_highwater.restype = ctypes.c_int64
    library.sqlite3_memory_highwater.argtypes = [ctypes.c_int]
    return library


async def test_a_burst_of_transitions_does_not_hold_a_statement_each(jobs: SqliteStorage):
    library = sqlite_library()
    if library is None:
        pytest.skip("the sqlite3 module is not linked to a shared libsqlite3 that ctypes can find")
    created = [await jobs.create_job(new_job(n)) for n in range(300)]
    library.sqlite3_memory_highwater(1)  # reset the high-water mark

    await asyncio.gather(*(jobs.record_placeholder(j.id, n, detail="posted") for n, j in enumerate(created)))
    await asyncio.gather(*(jobs.get_job(j.id) for j in created))

    # Read in one trip each, the statements finish and are reused: well under a megabyte. Left
    # half-read across an await, each of the 300 held its own ~130 KB (about 40 MB).
    assert library.sqlite3_memory_highwater(0) < 8 * 1024 * 1024
