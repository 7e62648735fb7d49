"""The `Storage` contract: every verb, once, on each backend (SQLite and PostgreSQL).

The verbs' SQL is written once in bot.storage.base; what differs per backend is how it runs (types,
placeholders, the clock, the trigger that writes events), so each test here runs on both. Several
"processes" are several Storage objects with their own owner on the same database. The tests at
the end are PostgreSQL's alone: claims from concurrent processes, and wake-ups between processes.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiosqlite
import asyncpg
import pytest

from bot.jobs.model import InvalidTransitionError, JobState, NewJob
from bot.params import ImagineParams
from bot.storage import open_storage
from bot.storage import postgres as postgres_backend
from bot.storage import sqlite as sqlite_backend
from bot.storage.base import DAY, PUSH, QUEUE, SETTINGS, Storage, Waiting, start_of_day

S = JobState
USER, OTHER_USER, GUILD, OTHER_GUILD = (
    1310000000000000201,
    1310000000000000202,
    1310000000000000301,
    1310000000000000302,
)
DEADLINE = 5.0


def new_job(
    n: int,
    *,
    user_id: int = USER,
    guild_id: int | None = GUILD,
    created_at: float | None = None,
    num_images: int = 1,
    **fields: Any,
) -> NewJob:
    return NewJob(
        interaction_id=1_000_000_000_000_000_000 + n,
        interaction_token=f"token-{n}",
        application_id=1310000000000000001,
        guild_id=guild_id,
        channel_id=1310000000000000100,
        user_id=user_id,
        created_at=time.time() if created_at is None else created_at,
        params=ImagineParams(prompt=f"prompt {n}", num_images=num_images, seed=42 + n, seed_was_random=False),
        file_limit=10 * 1024 * 1024,
        **fields,
    )


@dataclass
class Backend:
    """One database, on which a test opens as many Storage objects ("processes") as it likes."""

    name: str
    url: str
    opened: list[Storage] = field(default_factory=list)

    async def open(self, **options: Any) -> Storage:
        storage = await open_storage(self.url, **options)
        self.opened.append(storage)
        return storage

    @property
    def migrations(self) -> int:
        return len(sqlite_backend.MIGRATIONS if self.name == "sqlite" else postgres_backend.MIGRATIONS)

    async def force_schema_version(self, version: int) -> None:
        """What a newer bot would leave behind."""
        if self.name == "sqlite":
            async with aiosqlite.connect(self.url.removeprefix("sqlite:///")) as raw:
                await raw.execute(f"PRAGMA user_version = {version}")
                await raw.commit()
        else:
            server = await asyncpg.connect(self.url)
            try:
                await server.execute("UPDATE schema_version SET version = $1", version)
            finally:
                await server.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'bot.db'}"
    url: str = request.getfixturevalue("postgres_url")  # skipped (or failed, in CI) without a server
    return url


@pytest.fixture
async def backend(backend_url: str) -> AsyncIterator[Backend]:
    opened = Backend("sqlite" if backend_url.startswith("sqlite") else "postgresql", backend_url)
    yield opened
    for storage in opened.opened:
        await storage.close()


@pytest.fixture
async def storage(backend: Backend) -> Storage:
    return await backend.open()


def wakes(storage: Storage) -> asyncio.Queue[tuple[str, str]]:
    queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    storage.listen(lambda channel, payload: queue.put_nowait((channel, payload)))
    return queue


async def woken(queue: asyncio.Queue[tuple[str, str]], channel: str, payload: str) -> None:
    async with asyncio.timeout(DEADLINE):
        while (await queue.get()) != (channel, payload):
            pass


async def queued(storage: Storage, n: int, **options: Any) -> int:
    """A claimable job (its placeholder is up)."""
    job = await storage.create_job(new_job(n, **options))
    await storage.record_placeholder(job.id, 5000 + n)
    return job.id


# -- jobs ---------------------------------------------------------------------------------------------
async def test_a_job_round_trips_and_the_trigger_records_each_move_but_not_a_lease(storage: Storage):
    created = await storage.create_job(new_job(1, channel_nsfw=True, kind="reroll", source_job_id=7))
    assert await storage.get_job(created.id) == created
    assert (created.user_id, created.guild_id, created.interaction_token) == (USER, GUILD, "token-1")
    assert created.params == new_job(1).params and created.channel_nsfw is True and created.kind == "reroll"
    assert (created.state, created.owner, created.queue_tag) == (S.QUEUED, storage.owner, 0.0)
    assert created.lease_until is not None and created.lease_until > created.updated_at
    job = await storage.record_placeholder(created.id, 1310000000000000999)
    assert job.message_id == 1310000000000000999
    assert await storage.renew_leases() == 1
    claimed = await storage.claim_next(capacity=1)
    assert claimed is not None and claimed.id == job.id and claimed.state == S.SUBMITTING
    await storage.mark_submitted(job.id, prediction_id="pred-1", submitted_at=1.5)
    await storage.mark_completed(job.id, inference_ms=1234)
    await storage.mark_delivering(job.id, detail="uploading")
    done = await storage.mark_delivered(job.id, result_message_id=1310000000000000998, finished_at=2.5)
    assert (done.state, done.outcome, done.prediction_id, done.inference_ms) == (
        S.DELIVERED,
        "delivered",
        "pred-1",
        1234,
    )
    assert (done.submitted_at, done.finished_at, done.result_message_id) == (1.5, 2.5, 1310000000000000998)
    assert (done.interaction_token, done.owner) == ("", None)
    assert await storage.job_events(job.id) == [
        (None, "queued", "created"),
        ("queued", "queued", "placeholder posted"),
        ("queued", "submitting", "claimed"),
        ("submitting", "submitted", None),
        ("submitted", "completed", None),
        ("completed", "delivering", "uploading"),
        ("delivering", "delivered", None),
    ]
    last = await storage._rows("SELECT at FROM job_events WHERE job_id = ? ORDER BY id DESC LIMIT 1", (job.id,))
    assert last[0]["at"] == done.updated_at
    with pytest.raises(KeyError):
        await storage.get_job(job.id + 1000)


async def test_an_invalid_move_raises_and_changes_nothing(storage: Storage):
    job = await storage.create_job(new_job(1))
    with pytest.raises(InvalidTransitionError):
        await storage.mark_completed(job.id, inference_ms=1)
    assert await storage.get_job(job.id) == job
    assert await storage.job_events(job.id) == [(None, "queued", "created")]
    with pytest.raises(KeyError):
        await storage.mark_completed(job.id + 1000, inference_ms=1)


async def test_requeue_puts_a_refused_submit_back_in_its_place(storage: Storage):
    first, second = await queued(storage, 1), await queued(storage, 2, user_id=OTHER_USER)
    claimed = await storage.claim_next(capacity=1)
    assert claimed is not None and claimed.id == first
    back = await storage.requeue(first)
    assert (back.state, back.queue_tag) == (S.QUEUED, claimed.queue_tag)
    assert [w.job_id for w in await storage.waiting()] == [first, second]
    assert (await storage.job_events(first))[-1] == ("submitting", "queued", "rate limited")


async def test_cancel_takes_only_a_waiting_job(storage: Storage):
    started, waiting = await queued(storage, 1), await queued(storage, 2)
    assert await storage.claim_next(capacity=5) is not None
    cancelled = await storage.cancel(waiting, finished_at=3.0)
    assert cancelled is not None
    assert (cancelled.state, cancelled.outcome, cancelled.finished_at) == (S.CANCELLED, "cancelled", 3.0)
    assert (cancelled.interaction_token, cancelled.owner) == ("", None)
    before = await storage.get_job(started)
    assert await storage.cancel(started, finished_at=3.0) is None
    assert await storage.get_job(started) == before


async def test_fail_and_unconfirmed_end_a_job_and_clear_its_token_and_owner(storage: Storage):
    refused, maybe_billed = await queued(storage, 1), await queued(storage, 2)
    assert await storage.claim_next(capacity=5) is not None and await storage.claim_next(capacity=5) is not None
    failed = await storage.fail(refused, outcome="HTTPError", detail="x" * 300, finished_at=4.0)
    unconfirmed = await storage.fail(maybe_billed, outcome="Timeout", finished_at=5.0, unconfirmed=True)
    assert (failed.state, failed.outcome, failed.finished_at) == (S.FAILED, "HTTPError", 4.0)
    assert (unconfirmed.state, unconfirmed.outcome, unconfirmed.finished_at) == (S.UNCONFIRMED, "Timeout", 5.0)
    for job in (failed, unconfirmed):
        assert (job.interaction_token, job.owner) == ("", None)
    assert (await storage.job_events(refused))[-1] == ("submitting", "failed", "x" * 200)


async def test_unfinished_lists_the_open_jobs_oldest_first(storage: Storage):
    ids = [(await storage.create_job(new_job(n))).id for n in range(3)]
    await storage.cancel(ids[1], finished_at=1.0)
    assert [job.id for job in await storage.unfinished()] == [ids[0], ids[2]]


async def test_prune_deletes_old_finished_jobs_with_their_events_and_old_pushes(storage: Storage):
    now = await storage.clock()
    old_done = (await storage.create_job(new_job(1, created_at=now - 40 * DAY))).id
    old_open = (await storage.create_job(new_job(2, created_at=now - 40 * DAY))).id
    new_done = (await storage.create_job(new_job(3, created_at=now - DAY))).id
    for job_id in (old_done, new_done):
        await storage.cancel(job_id, finished_at=now)
    await storage.record_push("pred-1", "{}")
    assert await storage.prune(older_than_days=30, now=now) == 1
    with pytest.raises(KeyError):
        await storage.get_job(old_done)
    assert await storage.job_events(old_done) == []
    assert [job.id for job in await storage.unfinished()] == [old_open]
    assert (await storage.get_job(new_done)).state == S.CANCELLED
    assert await storage.pushed("pred-1") == "{}"  # received today: kept
    assert await storage.prune(older_than_days=30, now=now + 2 * DAY) == 0
    assert await storage.pushed("pred-1") is None


# -- the queue ----------------------------------------------------------------------------------------
async def test_fair_tags_let_a_newcomer_go_before_a_members_later_jobs(storage: Storage):
    busy = [await queued(storage, n, user_id=USER) for n in range(3)]
    newcomer = await queued(storage, 3, user_id=OTHER_USER)
    order = [(await storage.claim_next(capacity=10)) for _ in range(3)]
    assert [(job.id, job.queue_tag) for job in order if job] == [(busy[0], 0.0), (newcomer, 0.0), (busy[1], 1.0)]
    # The line's round is now 1: a new member joins there, before the busy member's third job.
    late = await queued(storage, 4, user_id=USER + 100)
    assert (await storage.get_job(late)).queue_tag == 1.0
    assert [w.job_id for w in await storage.waiting()] == [late, busy[2]]


async def test_jobs_asked_for_at_once_each_get_their_own_row_and_round(storage: Storage):
    """A burst is written in few statements (bot.storage.batch): ten members' four commands each,
    interleaved, still take rounds 0-3 per member, and each caller gets its own job back."""
    asked = [new_job(n, user_id=USER + n % 10) for n in range(40)]
    jobs = await asyncio.gather(*(storage.create_job(job) for job in asked))
    assert [job.interaction_id for job in jobs] == [job.interaction_id for job in asked]
    assert len({job.id for job in jobs}) == 40
    assert [job.queue_tag for job in jobs] == [float(n // 10) for n in range(40)]
    assert [(await storage.get_job(job.id)).params.prompt for job in jobs] == [f"prompt {n}" for n in range(40)]


async def test_a_duplicate_in_a_burst_fails_alone(storage: Storage):
    await storage.create_job(new_job(0))
    results = await asyncio.gather(
        *(storage.create_job(new_job(n, user_id=USER + n)) for n in range(4)), return_exceptions=True
    )
    assert isinstance(results[0], Exception)  # the same interaction twice: the UNIQUE constraint
    assert [job.interaction_id for job in results[1:] if not isinstance(job, BaseException)] == [
        new_job(n).interaction_id for n in (1, 2, 3)
    ]


async def test_placeholders_recorded_at_once_each_land_and_a_cancelled_job_is_refused(storage: Storage):
    jobs = [await storage.create_job(new_job(n, user_id=USER + n)) for n in range(5)]
    await storage.cancel(jobs[2].id, finished_at=1.0)
    results = await asyncio.gather(
        *(storage.record_placeholder(job.id, 7000 + n) for n, job in enumerate(jobs)), return_exceptions=True
    )
    assert isinstance(results[2], InvalidTransitionError)
    placed = [r for r in results if not isinstance(r, BaseException)]
    assert [(job.id, job.message_id, job.state) for job in placed] == [
        (jobs[n].id, 7000 + n, S.QUEUED) for n in (0, 1, 3, 4)
    ]
    assert [w.job_id for w in await storage.waiting()] == [jobs[n].id for n in (0, 1, 3, 4)]
    assert (await storage.job_events(jobs[0].id))[-1] == ("queued", "queued", "placeholder posted")


async def test_moves_asked_for_at_once_each_land_once_with_their_own_values(storage: Storage):
    """Moves of one kind at the same moment are one statement (bot.storage.batch): each job gets its
    own values; a job moved twice at once moves once (the second finds it ended); a job not in a
    state that may move is refused alone."""
    ids = [await queued(storage, n, user_id=USER + n) for n in range(6)]
    claimed = await storage.claim(capacity=10, limit=10)
    assert sorted(job.id for job in claimed) == ids
    submitted = await asyncio.gather(
        *(storage.mark_submitted(job_id, prediction_id=f"p{n}", submitted_at=100.0 + n) for n, job_id in enumerate(ids))
    )
    assert [(j.id, j.prediction_id, j.submitted_at, j.state) for j in submitted] == [
        (job_id, f"p{n}", 100.0 + n, S.SUBMITTED) for n, job_id in enumerate(ids)
    ]
    ends = await asyncio.gather(
        storage.fail(ids[0], outcome="first", finished_at=5.0),
        storage.fail(ids[0], outcome="second", finished_at=6.0),
        storage.fail(ids[1], outcome="other", finished_at=7.0),
        storage.fail(ids[2], outcome="third", detail="why", finished_at=8.0),
        return_exceptions=True,
    )
    assert isinstance(ends[1], InvalidTransitionError)
    first, _, other, third = ends
    assert not isinstance(first, BaseException) and (first.state, first.outcome, first.finished_at) == (
        S.FAILED,
        "first",
        5.0,
    )
    assert not isinstance(other, BaseException) and (other.state, other.outcome) == (S.FAILED, "other")
    assert not isinstance(third, BaseException) and third.interaction_token == "" and third.owner is None
    assert (await storage.job_events(ids[2]))[-1] == ("submitted", "failed", "why")
    assert (await storage.job_events(ids[0]))[-1] == ("submitted", "failed", None)


async def test_claim_respects_capacity_and_the_pause(storage: Storage):
    assert abs(await storage.clock() - time.time()) < 5
    first, second, third = [await queued(storage, n, user_id=USER + n) for n in range(3)]
    assert await storage.pause_submits(-1.0) <= await storage.clock()  # a pause that is over
    assert [(await storage.claim_next(capacity=2)) is not None for _ in range(3)] == [True, True, False]
    assert await storage.running_count() == 2
    await storage.mark_submitted(first, prediction_id="p1", submitted_at=1.0)
    assert await storage.claim_next(capacity=2) is None  # submitted still holds a slot
    await storage.mark_completed(first, inference_ms=1)
    job = await storage.claim_next(capacity=2)
    assert job is not None and job.id == third and await storage.running_count() == 2
    await storage.fail(second, outcome="x", finished_at=1.0)
    await queued(storage, 3, user_id=USER + 3)
    until = await storage.pause_submits(60)
    assert until >= await storage.clock() + 59 and await storage.paused_until() == until
    assert await storage.claim_next(capacity=2) is None  # a slot is free, but WaveSpeed said wait
    assert await storage.pause_submits(1) == until  # a shorter pause never shortens the longer one


async def test_waiting_lists_claimable_jobs_in_line_order(storage: Storage):
    first, second = await queued(storage, 1), await queued(storage, 2)
    newcomer = await queued(storage, 3, user_id=OTHER_USER)
    unannounced = await storage.create_job(new_job(4, user_id=USER + 100))  # no placeholder yet
    assert await storage.waiting() == [
        Waiting(first, USER, storage.owner),
        Waiting(newcomer, OTHER_USER, storage.owner),
        Waiting(second, USER, storage.owner),
    ]
    assert [w.job_id for w in await storage.waiting(limit=2)] == [first, newcomer]
    assert unannounced.id not in [w.job_id for w in await storage.waiting()]


# -- leases -------------------------------------------------------------------------------------------
async def test_leases_are_renewed_adopted_when_expired_and_released_at_shutdown(backend: Backend):
    alive = await backend.open(owner="alive", lease_seconds=30)
    adopter = await backend.open(owner="adopter", lease_seconds=30)
    dead = await backend.open(owner="dead", lease_seconds=-5)  # its leases ran out as they were written
    kept = (await alive.create_job(new_job(1))).id
    orphan = (await dead.create_job(new_job(2))).id
    ended = (await dead.create_job(new_job(3))).id
    await dead.cancel(ended, finished_at=1.0)
    events = await alive.job_events(kept)
    assert await alive.renew_leases() == 1
    lease = (await alive.get_job(kept)).lease_until
    assert lease is not None and lease > await alive.clock() + 25
    assert await alive.job_events(kept) == events  # a renewal is not a move

    adopted = await adopter.adopt_orphans()
    assert [(job.id, job.owner) for job in adopted] == [(orphan, "adopter")]
    assert adopted[0].lease_until is not None and adopted[0].lease_until > await adopter.clock() + 25
    assert await adopter.adopt_orphans() == []  # its own, and alive's unexpired, are not orphans
    assert (await adopter.get_job(kept)).owner == "alive"

    assert [job.id for job in await adopter.adopt_orphans(everything=True)] == [kept]
    assert (await alive.get_job(kept)).owner == "adopter"

    released = (await alive.create_job(new_job(4))).id
    await alive.release_leases()
    assert [job.id for job in await adopter.adopt_orphans()] == [released]
    assert (await alive.get_job(ended)).owner is None


# -- pushed results, settings, meta -------------------------------------------------------------------
async def test_a_push_is_kept_once_and_wakes_the_listeners(storage: Storage):
    heard = wakes(storage)
    await storage.record_push("pred-1", '{"status": "completed"}')
    await storage.record_push("pred-1", '{"status": "a retry"}')
    assert await storage.pushed("pred-1") == '{"status": "completed"}'
    assert await storage.pushed("pred-2") is None
    await woken(heard, PUSH, "pred-1")


async def test_usage_counts_images_of_jobs_that_cost_something(storage: Storage):
    midnight = 1_750_032_000.0  # a UTC midnight
    now = midnight + 10 * 3600
    assert start_of_day(now) == midnight
    await storage.create_job(new_job(1, created_at=now - 60, num_images=2))
    billed = await queued(storage, 2, created_at=now - 3600, num_images=4)
    assert await storage.claim_next(capacity=1) is not None
    await storage.fail(billed, outcome="Timeout", finished_at=now, unconfirmed=True)
    free = await storage.create_job(new_job(3, created_at=now - 120, num_images=3))
    await storage.cancel(free.id, finished_at=now)
    await storage.create_job(new_job(4, guild_id=OTHER_GUILD, created_at=now - 2 * DAY))
    await storage.create_job(new_job(5, created_at=now - 20 * DAY))
    await storage.create_job(new_job(6, user_id=OTHER_USER, created_at=now - 100))
    await storage.create_job(new_job(7, user_id=OTHER_USER, guild_id=OTHER_GUILD, created_at=now - 30, num_images=4))

    usage = await storage.usage_for(user_id=USER, guild_id=GUILD, now=now, window_seconds=7200)
    assert usage.user_active == 2 + 1 + 1  # queued jobs: today's, two days' and twenty days' old
    assert usage.user_window == ((now - 3600, 4), (now - 60, 2))
    assert (usage.guild_today, usage.global_today) == (2 + 4 + 1, 2 + 4 + 1 + 4)
    assert (await storage.usage_for(user_id=USER, guild_id=None, now=now, window_seconds=60)).guild_today == 0
    user = await storage.totals(now=now, user_id=USER)
    assert (user.today, user.last_7_days, user.last_30_days) == (6, 7, 8)
    guild = await storage.totals(now=now, guild_id=GUILD)
    assert (guild.today, guild.last_7_days, guild.last_30_days) == (7, 7, 8)
    assert await storage.images_today(now=now) == 11


async def test_guild_settings_are_saved_replaced_and_announced(storage: Storage):
    heard = wakes(storage)
    assert await storage.load_guild_settings(GUILD) is None
    await storage.save_guild_settings(GUILD, '{"nsfw": "block"}')
    await storage.save_guild_settings(GUILD, '{"nsfw": "allow"}')
    assert await storage.load_guild_settings(GUILD) == '{"nsfw": "allow"}'
    assert await storage.load_guild_settings(OTHER_GUILD) is None
    await woken(heard, SETTINGS, str(GUILD))


async def test_meta_keeps_the_last_value(storage: Storage):
    assert await storage.get_meta("k") is None
    await storage.set_meta("k", "v1")
    await storage.set_meta("k", "v2")
    assert await storage.get_meta("k") == "v2"


async def test_schema_version_and_a_database_from_a_newer_bot_is_refused(backend: Backend):
    storage = await backend.open()
    assert await storage.schema_version() == backend.migrations
    backend.opened.remove(storage)
    await storage.close()
    await backend.force_schema_version(backend.migrations + 1)
    with pytest.raises(RuntimeError, match="newer than this bot"):
        await backend.open()


# -- PostgreSQL only: several processes on one database -----------------------------------------------
TOTAL, CAPACITY, PROCESSES = 60, 6, 4


@pytest.fixture
async def processes(postgres_url: str) -> AsyncIterator[list[Storage]]:
    opened = list(await asyncio.gather(*(open_storage(postgres_url, owner=f"process-{n}") for n in range(PROCESSES))))
    yield opened
    for storage in opened:
        await storage.close()


async def test_processes_starting_together_migrate_once(postgres_url: str, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO, logger="bot.storage.postgres")
    started = await asyncio.gather(*(open_storage(postgres_url) for _ in range(PROCESSES)), return_exceptions=True)
    try:
        assert [await storage.schema_version() for storage in started if isinstance(storage, Storage)] == [
            len(postgres_backend.MIGRATIONS)
        ] * PROCESSES, started
    finally:
        for storage in started:
            if isinstance(storage, Storage):
                await storage.close()
    migrated = [record for record in caplog.records if "migrated to schema version" in record.getMessage()]
    assert len(migrated) == len(postgres_backend.MIGRATIONS)


async def test_concurrent_claims_never_share_a_job_or_exceed_capacity(processes: list[Storage]):
    for n in range(TOTAL):
        await queued(processes[0], n, user_id=USER + n % 10)
    claimed: list[int] = []
    running: list[int] = []
    refusals = 0
    to_complete: asyncio.Queue[int] = asyncio.Queue()
    refused = asyncio.Event()
    progress = asyncio.Condition()
    completions = 0

    async def completed_since(seen: int) -> None:
        async with progress:
            await progress.wait_for(lambda: completions > seen or len(claimed) >= TOTAL)

    async def claimer(storage: Storage) -> None:
        nonlocal refusals
        while len(claimed) < TOTAL:
            seen = completions
            job = await storage.claim_next(capacity=CAPACITY)
            if job is None:
                refusals += 1
                refused.set()
                await completed_since(seen)
                continue
            assert job.owner == storage.owner
            claimed.append(job.id)
            running.append(await storage.running_count())
            to_complete.put_nowait(job.id)
        refused.set()  # nothing left to claim: the completer may finish the rest

    async def completer() -> None:
        nonlocal completions
        for n in range(TOTAL):
            if len(claimed) < TOTAL:
                await refused.wait()  # complete one only when claims are turned away: the line stays full
                refused.clear()
            job_id = await to_complete.get()
            storage = processes[n % PROCESSES]
            await storage.mark_submitted(job_id, prediction_id=f"pred-{job_id}", submitted_at=time.time())
            await storage.mark_completed(job_id, inference_ms=1)
            async with progress:
                completions += 1
                progress.notify_all()

    async with asyncio.timeout(60):
        await asyncio.gather(completer(), *(claimer(storage) for storage in processes))
    assert len(claimed) == len(set(claimed)) == TOTAL
    assert max(running) <= CAPACITY, running
    assert refusals > 0
    claims = await processes[0]._rows(
        "SELECT job_id, COUNT(*) AS n FROM job_events WHERE to_state = 'submitting' GROUP BY job_id"
    )
    assert sorted(row["job_id"] for row in claims) == sorted(claimed) and {row["n"] for row in claims} == {1}


async def test_a_notification_wakes_a_listener_in_another_process(processes: list[Storage]):
    heard = wakes(processes[0])
    await processes[1].notify(QUEUE, "slot free")
    await woken(heard, QUEUE, "slot free")


async def test_wake_ups_asked_for_at_once_all_arrive(processes: list[Storage]):
    """Wake-ups are sent together (one statement per burst), each distinct one at least once."""
    heard = wakes(processes[0])
    await asyncio.gather(*(processes[1].notify(QUEUE, f"job {n % 5}") for n in range(50)))
    for n in range(5):
        await woken(heard, QUEUE, f"job {n}")


async def test_the_listener_reconnects_after_losing_its_connection(
    processes: list[Storage], caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.WARNING, logger="bot.storage.postgres")
    listener, sender = processes[0], processes[1]
    heard = wakes(listener)
    row = await sender._one(
        "SELECT COUNT(pg_terminate_backend(pid)) AS n FROM pg_stat_activity "
        "WHERE datname = current_database() AND query LIKE 'LISTEN %'"
    )
    assert row is not None and row["n"] == PROCESSES  # every process's listener
    async with asyncio.timeout(3 * DEADLINE):
        for attempt in itertools.count():  # until a ping gets through: the listener is back
            await sender.notify(QUEUE, f"ping {attempt}")
            try:
                async with asyncio.timeout(0.5):
                    while (await heard.get()) != (QUEUE, f"ping {attempt}"):
                        pass
                break
            except TimeoutError:
                continue
    assert any("listener connection lost" in record.getMessage() for record in caplog.records)


async def test_concurrent_claims_are_not_turned_away_while_jobs_and_slots_are_free(processes: list[Storage]):
    """Claims wait for each other rather than collide: without the lock, claims racing for the head
    of the line would come back empty-handed while jobs and slots are free."""
    for n in range(TOTAL):
        await queued(processes[0], n, user_id=USER + n % 10)
    claimed: list[int] = []
    turned_away = 0

    async def claimer(storage: Storage) -> None:
        nonlocal turned_away
        while len(claimed) < TOTAL:
            # Far more jobs left than claims that may be in flight or queue before this one: one
            # is surely still queued when this claim runs.
            surely_one = TOTAL - len(claimed) > 3 * PROCESSES
            job = await storage.claim_next(capacity=TOTAL)
            if job is not None:
                claimed.append(job.id)
            elif surely_one:
                turned_away += 1
            else:
                return

    async with asyncio.timeout(60):
        await asyncio.gather(*(claimer(storage) for storage in processes))
    assert turned_away == 0
    assert len(claimed) == len(set(claimed)) == TOTAL


async def test_a_members_commands_arriving_at_once_in_several_processes_get_a_round_each(processes: list[Storage]):
    """Twenty commands of one member, written at once through four pools: each takes its own round
    (a read-then-insert would hand several of them the same one, and the member two turns in one)."""
    jobs = await asyncio.gather(
        *(processes[n % PROCESSES].create_job(new_job(n, user_id=USER + 77)) for n in range(20))
    )
    assert sorted(-1.0 if job.queue_tag is None else job.queue_tag for job in jobs) == [float(n) for n in range(20)]
