"""The one storage interface: every verb the bot needs, in SQL that SQLite and PostgreSQL both speak.

A backend (`bot.storage.sqlite`, `bot.storage.postgres`) supplies how a statement runs, its
migrations, its clock expression and its wake-ups; everything else is here, once. No caller sees a
connection: jobs move only through the typed verbs below, each one guarded statement that matches
a job only in a state that may move (`UPDATE ... WHERE state IN (...) RETURNING *`), with the event
written by trigger in the same statement.

The database is the queue. A job's place in line is its `queue_tag` (start-time fair queuing, so
members take turns), the cap on jobs running on WaveSpeed is a count in the claim statement, and
the 429 pause is a row every process reads. Each unfinished job has an `owner` (a process) and a
`lease_until` the owner renews; a job whose lease ran out is adopted by another process.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import json
import os
import socket
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bot.jobs.model import TERMINAL, TRANSITIONS, InvalidTransitionError, JobRecord, JobState, NewJob
from bot.limits import Usage, next_utc_midnight
from bot.storage.batch import Batcher, distinct_runs
from bot.storage.members import MemberData

S = JobState
DAY = 86400.0
# Jobs that cost nothing: refused by WaveSpeed (failed predictions are refunded) or cancelled.
FREE = (S.FAILED.value, S.CANCELLED.value)
ACTIVE = tuple(s.value for s in JobState if s not in TERMINAL)
# Jobs that hold one of WaveSpeed's slots (MAX_CONCURRENT_JOBS counts these).
RUNNING = (S.SUBMITTING.value, S.SUBMITTED.value)
_TERMINAL = tuple(s.value for s in TERMINAL)
# Columns a move may set besides the state.
FIELDS = {  # and their SQL types
    "prediction_id": "TEXT",
    "message_id": "BIGINT",
    "result_message_id": "BIGINT",
    "submitted_at": "DOUBLE PRECISION",
    "finished_at": "DOUBLE PRECISION",
    "inference_ms": "BIGINT",
    "outcome": "TEXT",
}
# The columns a new job is written with, and their SQL types (a batch of rows is a typed table).
INSERTED = {
    "interaction_id": "BIGINT", "interaction_token": "TEXT", "application_id": "BIGINT", "guild_id": "BIGINT",
    "channel_id": "BIGINT", "user_id": "BIGINT", "created_at": "DOUBLE PRECISION", "params": "TEXT",
    "file_limit": "BIGINT", "channel_nsfw": "INTEGER", "kind": "TEXT", "source_job_id": "BIGINT", "locale": "TEXT",
    "guild_locale": "TEXT", "num_images": "INTEGER", "state": "TEXT", "last_detail": "TEXT", "owner": "TEXT",
}  # fmt: skip
# Wake-up channels: a job joined or left the line or a slot came free; a pushed result arrived;
# a server's moderation settings changed (payload: the guild id).
QUEUE, PUSH, SETTINGS = "imagine_queue", "imagine_push", "imagine_settings"
Listener = Callable[[str, str], None]


def new_owner_id() -> str:
    """This process, for the jobs it runs: host, pid and a random part (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def start_of_day(now: float) -> float:
    return next_utc_midnight(now) - DAY


@dataclass(frozen=True)
class Waiting:
    """A queued job, in line order."""

    job_id: int
    user_id: int
    owner: str | None


@dataclass(frozen=True)
class Totals:
    today: int
    last_7_days: int
    last_30_days: int


def _marks(values: Collection[object]) -> str:
    return ", ".join("?" * len(values))


class Storage(MemberData):
    """Jobs, the queue, leases, pushes, usage, server settings and meta, behind typed verbs; a
    member's own history and erasure come from `bot.storage.members`."""

    backend: str  # "sqlite" or "postgresql"
    # An expression for the database's clock in unix seconds: leases and pauses compare against one
    # clock, not each host's.
    NOW: str
    # The larger and the smaller of two values (`MAX(a, b)`/`MIN(a, b)` in SQLite, `GREATEST`/`LEAST`
    # in PostgreSQL).
    GREATEST: str
    LEAST: str
    # What an UPDATE ... FROM returns of the updated jobs: `*` in SQLite (which allows no `jobs.*`
    # there), `jobs.*` in PostgreSQL (where `*` adds the columns of the table joined).
    UPDATED: str

    def __init__(self, *, owner: str | None = None, lease_seconds: float = 10.0) -> None:
        self.owner = owner or new_owner_id()
        self.lease_seconds = lease_seconds
        self._listeners: list[Listener] = []
        self._creations = Batcher(self._create_jobs, name="job creations")
        self._moves: dict[tuple[JobState, JobState | None, tuple[str, ...]], Batcher[Any, JobRecord | None]] = {}

    # -- what a backend supplies ------------------------------------------------------------------
    @abc.abstractmethod
    async def _rows(self, sql: str, args: Sequence[object] = ()) -> list[Mapping[str, Any]]:
        """Every row of one statement (`?` placeholders), read in one trip."""

    @abc.abstractmethod
    async def _run(self, sql: str, args: Sequence[object] = ()) -> int:
        """Run one statement; the number of rows it changed."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def aclose(self) -> None:
        await self.close()

    @abc.abstractmethod
    async def schema_version(self) -> int: ...

    @abc.abstractmethod
    async def notify(self, channel: str, payload: str = "") -> None:
        """Wake every process's listeners (this one's included) on `channel`."""

    async def claim(self, *, capacity: int, limit: int = 1) -> list[JobRecord]:
        """The next jobs in fair order (at most `limit`, and only while fewer than `capacity` run and
        WaveSpeed's pause is over), moved to `submitting` and owned by this process, in line order.
        A backend with several processes serialises this (PostgreSQL: an advisory lock)."""
        return await self._claim(capacity, limit)

    async def claim_next(self, *, capacity: int) -> JobRecord | None:
        """The next job in fair order, if a slot is free: `claim` for one."""
        claimed = await self.claim(capacity=capacity, limit=1)
        return claimed[0] if claimed else None

    def listen(self, listener: Listener) -> None:
        """`listener(channel, payload)` is called for every wake-up on this process."""
        self._listeners.append(listener)

    def _wake(self, channel: str, payload: str) -> None:
        for listener in list(self._listeners):
            listener(channel, payload)

    async def _one(self, sql: str, args: Sequence[object] = ()) -> Mapping[str, Any] | None:
        return next(iter(await self._rows(sql, args)), None)

    # -- meta -------------------------------------------------------------------------------------
    async def get_meta(self, key: str) -> str | None:
        row = await self._one("SELECT value FROM meta WHERE key = ?", (key,))
        return str(row["value"]) if row else None

    async def set_meta(self, key: str, value: str) -> None:
        await self._run(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # -- jobs ---------------------------------------------------------------------------------------
    async def create_job(self, job: NewJob) -> JobRecord:
        """Write a new queued job, owned by this process, with its place in the fair line: one round
        after the member's previous job, never before the line's current round. Jobs asked for at
        the same moment are written by one statement (`bot.storage.batch`)."""
        return await self._creations(job)

    async def _create_jobs(self, jobs: list[NewJob]) -> list[JobRecord]:
        """One INSERT per run of jobs from distinct members: a member's round is read (or, on
        PostgreSQL, upserted) once per statement, so two of one member's jobs go in two."""
        created: list[JobRecord] = []
        for run in distinct_runs(jobs, key=lambda job: job.user_id):
            created += await self._insert_jobs(run)
        return created

    async def _insert_jobs(self, jobs: list[NewJob]) -> list[JobRecord]:
        """Jobs of distinct members (the table `n`), each a round after its member's last job."""
        tag = (
            f"(SELECT {self.GREATEST}(q.virtual_time, COALESCE((SELECT MAX(j.queue_tag) + 1 FROM jobs j "
            "WHERE j.user_id = n.user_id), q.virtual_time)) FROM queue_state q WHERE q.id = 1)"
        )
        return await self._insert_rows(jobs, tag)

    async def _insert_rows(self, jobs: list[NewJob], tag: str, *, more: str = "") -> list[JobRecord]:
        """The one INSERT of jobs, from the table `n` of their values; `tag` is the SQL of a job's
        round (reading `n`), `more` further WITH clauses it may use (without arguments)."""
        if not jobs:
            return []
        rows = [self._job_values(job) for job in jobs]
        columns = list(rows[0])
        table, args = self._table([INSERTED[column] for column in columns], [list(row.values()) for row in rows])
        written = await self._rows(
            f"WITH n ({', '.join(columns)}) AS ({table}){more} "
            f"INSERT INTO jobs ({', '.join(columns)}, updated_at, lease_until, queue_tag) "
            f"SELECT {', '.join(f'n.{column}' for column in columns)}, {self.NOW}, {self.NOW} + ?, {tag} FROM n "
            "RETURNING *",
            [*args, self.lease_seconds],
        )
        by_interaction = {int(r["interaction_id"]): JobRecord.from_row(r) for r in written}
        return [by_interaction[job.interaction_id] for job in jobs]

    def _table(self, types: Sequence[str], rows: Sequence[Sequence[object]]) -> tuple[str, list[object]]:
        """`rows` as the body of a WITH clause, a table of columns of `types`, and its arguments.
        Here a VALUES list: a new statement text for each batch size, which SQLite compiles in
        microseconds (PostgreSQL overrides it)."""
        row = "(" + ", ".join(f"CAST(? AS {kind})" for kind in types) + ")"
        return f"VALUES {', '.join([row] * len(rows))}", [value for row_ in rows for value in row_]

    def _job_values(self, job: NewJob) -> dict[str, object]:
        values: dict[str, object] = {f.name: getattr(job, f.name) for f in dataclasses.fields(NewJob)}
        values.update(
            params=json.dumps(dataclasses.asdict(job.params)),
            num_images=job.params.num_images,
            channel_nsfw=int(job.channel_nsfw),
            state=S.QUEUED.value,
            last_detail="created",
            owner=self.owner,
        )
        return values

    async def get_job(self, job_id: int) -> JobRecord:
        row = await self._one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        if row is None:
            raise KeyError(job_id)
        return JobRecord.from_row(row)

    async def job_events(self, job_id: int) -> list[tuple[str | None, str, str | None]]:
        rows = await self._rows(
            "SELECT from_state, to_state, detail FROM job_events WHERE job_id = ? ORDER BY id", (job_id,)
        )
        return [(row["from_state"], row["to_state"], row["detail"]) for row in rows]

    async def _move(
        self, job_id: int, to: JobState, *, detail: str = "", only_from: JobState | None = None, **fields: object
    ) -> JobRecord:
        """Move a job to `to`, setting `fields`: the only statement that changes a job's state. It
        matches only a job in a state that may move to `to` (or only `only_from`, for verbs that
        share a target state); a job that ends loses its interaction token and its lease. Moves of
        one kind asked for at the same moment are one statement (`bot.storage.batch`)."""
        unknown = set(fields) - FIELDS.keys()
        if unknown:
            raise ValueError(f"not a job field: {sorted(unknown)}")
        names = tuple(sorted(fields))
        kind = (to, only_from, names)
        if (moves := self._moves.get(kind)) is None:
            moves = self._moves[kind] = Batcher(
                functools.partial(self._move_all, to, only_from, names), name=f"moves to {to.value}"
            )
        moved = await moves((job_id, detail or None, *(fields[name] for name in names)))
        if moved is None:
            current = await self.get_job(job_id)  # raises KeyError for a job that doesn't exist
            raise InvalidTransitionError(f"job {job_id}: {current.state} -> {to} is not a transition")
        return moved

    async def _move_all(
        self, to: JobState, only_from: JobState | None, names: tuple[str, ...], moves: list[tuple[Any, ...]]
    ) -> list[JobRecord | None]:
        """One UPDATE per run of distinct jobs; each move is (job id, detail, *values of `names`).
        None for a job that was not in a state that may move to `to`."""
        moved: list[JobRecord | None] = []
        for run in distinct_runs(moves, key=lambda move: move[0]):
            by_id = await self._update_jobs(to, only_from, names, run)
            moved += [by_id.get(int(move[0])) for move in run]
        return moved

    async def _update_jobs(
        self, to: JobState, only_from: JobState | None, names: tuple[str, ...], moves: list[tuple[Any, ...]]
    ) -> dict[int, JobRecord]:
        sources = [state.value for state, targets in TRANSITIONS.items() if to in targets]
        if only_from is not None:
            sources = [s for s in sources if s == only_from.value]
        # Each move's values are a row of a table `m`, typed: PostgreSQL cannot guess a type there.
        table, args = self._table(("BIGINT", "TEXT", *(FIELDS[name] for name in names)), moves)
        assignments = [f"{name} = m.{name}" for name in ("last_detail", *names)]
        if to in TERMINAL:
            assignments += ["interaction_token = NULL", "owner = NULL"]
        rows = await self._rows(
            f"WITH m (id, {', '.join(('last_detail', *names))}) AS ({table}) "
            f"UPDATE jobs SET state = ?, {', '.join(assignments)}, updated_at = {self.NOW} "
            f"FROM m WHERE jobs.id = m.id AND jobs.state IN ({_marks(sources)}) RETURNING {self.UPDATED}",
            (*args, to.value, *sources),
        )
        return {int(r["id"]): JobRecord.from_row(r) for r in rows}

    async def record_placeholder(
        self, job_id: int, message_id: int | None, *, detail: str = "placeholder posted"
    ) -> JobRecord:
        """The job's placeholder is up (queued -> queued): from now on it may be claimed."""
        return await self._move(job_id, S.QUEUED, detail=detail, only_from=S.QUEUED, message_id=message_id)

    async def requeue(self, job_id: int, *, detail: str = "rate limited") -> JobRecord:
        """WaveSpeed provably refused the submit (429): back in line, at its old place."""
        return await self._move(job_id, S.QUEUED, detail=detail, only_from=S.SUBMITTING)

    async def mark_submitted(self, job_id: int, *, prediction_id: str, submitted_at: float) -> JobRecord:
        return await self._move(job_id, S.SUBMITTED, prediction_id=prediction_id, submitted_at=submitted_at)

    async def mark_completed(self, job_id: int, *, inference_ms: int | None) -> JobRecord:
        return await self._move(job_id, S.COMPLETED, inference_ms=inference_ms)

    async def mark_delivering(self, job_id: int, *, detail: str = "") -> JobRecord:
        return await self._move(job_id, S.DELIVERING, detail=detail)

    async def mark_delivered(self, job_id: int, *, result_message_id: int | None, finished_at: float) -> JobRecord:
        return await self._move(
            job_id, S.DELIVERED, result_message_id=result_message_id, finished_at=finished_at, outcome="delivered"
        )

    async def fail(
        self, job_id: int, *, outcome: str, detail: str = "", finished_at: float, unconfirmed: bool = False
    ) -> JobRecord:
        """End a job that did not deliver: failed, or unconfirmed (the submit may have been billed)."""
        to = S.UNCONFIRMED if unconfirmed else S.FAILED
        return await self._move(job_id, to, detail=detail[:200], outcome=outcome, finished_at=finished_at)

    async def cancel(self, job_id: int, *, finished_at: float) -> JobRecord | None:
        """Take a waiting job out of line (nothing was sent). None if it has started or ended."""
        try:
            return await self._move(job_id, S.CANCELLED, outcome="cancelled", finished_at=finished_at)
        except InvalidTransitionError:
            return None

    async def unfinished(self) -> list[JobRecord]:
        rows = await self._rows(f"SELECT * FROM jobs WHERE state NOT IN ({_marks(_TERMINAL)}) ORDER BY id", _TERMINAL)
        return [JobRecord.from_row(row) for row in rows]

    async def prune(self, *, older_than_days: float, now: float) -> int:
        """Delete finished jobs (and their events) created more than `older_than_days` ago."""
        cutoff = now - older_than_days * DAY
        await self._run("DELETE FROM pushes WHERE received_at < ?", (now - DAY,))
        return await self._run(
            f"DELETE FROM jobs WHERE created_at < ? AND state IN ({_marks(_TERMINAL)})", (cutoff, *_TERMINAL)
        )

    # -- the queue ----------------------------------------------------------------------------------
    async def _claim(self, capacity: int, limit: int) -> list[JobRecord]:
        """One statement: the next jobs in fair order, as many as the free slots allow (at most
        `limit`), moved to `submitting` and owned by this process; then the line's round moves on."""
        sources = [state.value for state, targets in TRANSITIONS.items() if S.SUBMITTING in targets]
        free = (
            f"{self.GREATEST}(0, {self.LEAST}(?, ? - (SELECT COUNT(*) FROM jobs WHERE state IN ({_marks(RUNNING)}))))"
        )
        rows = await self._rows(
            f"UPDATE jobs SET state = ?, owner = ?, lease_until = {self.NOW} + ?, last_detail = 'claimed', "
            f"updated_at = {self.NOW} WHERE id IN (SELECT id FROM jobs WHERE state = 'queued' "
            f"AND message_id IS NOT NULL ORDER BY queue_tag, id LIMIT {free}) "
            f"AND (SELECT paused_until FROM queue_state WHERE id = 1) <= {self.NOW} "
            f"AND state IN ({_marks(sources)}) RETURNING *",
            (S.SUBMITTING.value, self.owner, self.lease_seconds, limit, capacity, *RUNNING, *sources),
        )
        if not rows:
            return []
        jobs = sorted((JobRecord.from_row(row) for row in rows), key=lambda j: (j.queue_tag or 0.0, j.id))
        await self._run(
            f"UPDATE queue_state SET virtual_time = {self.GREATEST}(virtual_time, ?) WHERE id = 1",
            (jobs[-1].queue_tag or 0.0,),
        )
        return jobs

    async def waiting(self, *, limit: int = 1_000_000) -> list[Waiting]:
        """Queued jobs whose placeholder is up, in the order they will start (every one by default:
        a process needs to know which of its own jobs still wait, however far back)."""
        rows = await self._rows(
            "SELECT id, user_id, owner FROM jobs WHERE state = 'queued' AND message_id IS NOT NULL "
            "ORDER BY queue_tag, id LIMIT ?",
            (limit,),
        )
        return [Waiting(int(r["id"]), int(r["user_id"]), r["owner"]) for r in rows]

    async def running_count(self) -> int:
        row = await self._one(f"SELECT COUNT(*) AS n FROM jobs WHERE state IN ({_marks(RUNNING)})", RUNNING)
        return int(row["n"]) if row else 0

    async def pause_submits(self, seconds: float) -> float:
        """Hold every process's submits for `seconds` (WaveSpeed's Retry-After); returns when, in unix time."""
        row = await self._one(
            f"UPDATE queue_state SET paused_until = {self.GREATEST}(paused_until, {self.NOW} + ?) WHERE id = 1 "
            "RETURNING paused_until",
            (seconds,),
        )
        return float(row["paused_until"]) if row else 0.0

    async def paused_until(self) -> float:
        row = await self._one("SELECT paused_until FROM queue_state WHERE id = 1")
        return float(row["paused_until"]) if row else 0.0

    async def clock(self) -> float:
        """The database's clock, in unix seconds."""
        row = await self._one(f"SELECT {self.NOW} AS now")
        return float(row["now"]) if row else 0.0

    # -- leases -------------------------------------------------------------------------------------
    async def renew_leases(self) -> int:
        """Keep this process's jobs its own for another lease; returns how many it holds."""
        return await self._run(
            f"UPDATE jobs SET lease_until = {self.NOW} + ? WHERE owner = ? AND state NOT IN ({_marks(_TERMINAL)})",
            (self.lease_seconds, self.owner, *_TERMINAL),
        )

    async def adopt_orphans(self, *, everything: bool = False) -> list[JobRecord]:
        """Unfinished jobs whose owner's lease ran out (it died), now this process's, oldest first.
        With `everything`, every unfinished job not already ours (one process on SQLite at start-up:
        nobody else can be running them)."""
        expired = "1 = 1" if everything else f"(lease_until IS NULL OR lease_until < {self.NOW})"
        rows = await self._rows(
            f"UPDATE jobs SET owner = ?, lease_until = {self.NOW} + ? WHERE state NOT IN ({_marks(_TERMINAL)}) "
            f"AND (owner IS NULL OR owner <> ?) AND {expired} RETURNING *",
            (self.owner, self.lease_seconds, *_TERMINAL, self.owner),
        )
        return sorted((JobRecord.from_row(row) for row in rows), key=lambda j: j.id)

    async def release_leases(self) -> None:
        """At a clean shutdown: this process's unfinished jobs may be adopted at once."""
        await self._run(
            f"UPDATE jobs SET lease_until = 0 WHERE owner = ? AND state NOT IN ({_marks(_TERMINAL)})",
            (self.owner, *_TERMINAL),
        )

    # -- pushed results -----------------------------------------------------------------------------
    async def record_push(self, prediction_id: str, body: str) -> None:
        """A finished prediction WaveSpeed posted (signature checked), for whichever process runs it."""
        await self._run(
            f"INSERT INTO pushes (prediction_id, body, received_at) VALUES (?, ?, {self.NOW}) "
            "ON CONFLICT (prediction_id) DO NOTHING",
            (prediction_id, body),
        )
        await self.notify(PUSH, prediction_id)

    async def pushed(self, prediction_id: str) -> str | None:
        row = await self._one("SELECT body FROM pushes WHERE prediction_id = ?", (prediction_id,))
        return str(row["body"]) if row else None

    # -- usage, counted in images -------------------------------------------------------------------
    async def _sum(self, where: str, args: Sequence[object]) -> int:
        row = await self._one(
            f"SELECT COALESCE(SUM(num_images), 0) AS n FROM jobs WHERE state NOT IN ({_marks(FREE)}) AND {where}",
            (*FREE, *args),
        )
        return int(row["n"]) if row else 0

    async def usage_for(self, *, user_id: int, guild_id: int | None, now: float, window_seconds: float) -> Usage:
        user_active = await self._sum(f"user_id = ? AND state IN ({_marks(ACTIVE)})", (user_id, *ACTIVE))
        rows = await self._rows(
            f"SELECT created_at, num_images FROM jobs WHERE state NOT IN ({_marks(FREE)}) AND user_id = ? "
            "AND created_at > ? ORDER BY created_at",
            (*FREE, user_id, now - window_seconds),
        )
        window = tuple((float(row["created_at"]), int(row["num_images"])) for row in rows)
        today = start_of_day(now)
        guild_today = await self._sum("guild_id = ? AND created_at >= ?", (guild_id, today)) if guild_id else 0
        global_today = await self._sum("created_at >= ?", (today,))
        return Usage(user_active=user_active, user_window=window, guild_today=guild_today, global_today=global_today)

    async def totals(self, *, now: float, user_id: int | None = None, guild_id: int | None = None) -> Totals:
        """Images counted for a member or a server: today (UTC), and the last 7 and 30 days."""
        column, value = ("user_id", user_id) if user_id is not None else ("guild_id", guild_id)
        where = f"{column} = ? AND created_at >= ?"
        return Totals(
            today=await self._sum(where, (value, start_of_day(now))),
            last_7_days=await self._sum(where, (value, now - 7 * DAY)),
            last_30_days=await self._sum(where, (value, now - 30 * DAY)),
        )

    async def images_today(self, *, now: float) -> int:
        """Images counted today (UTC) across every server and DM: the host's figure."""
        return await self._sum("created_at >= ?", (start_of_day(now),))

    # -- each server's moderation settings ------------------------------------------------------------
    async def load_guild_settings(self, guild_id: int) -> str | None:
        row = await self._one("SELECT settings FROM guild_settings WHERE guild_id = ?", (guild_id,))
        return str(row["settings"]) if row else None

    async def save_guild_settings(self, guild_id: int, document: str) -> None:
        await self._run(
            f"INSERT INTO guild_settings (guild_id, settings, updated_at) VALUES (?, ?, {self.NOW}) "
            "ON CONFLICT (guild_id) DO UPDATE SET settings = excluded.settings, updated_at = excluded.updated_at",
            (guild_id, document),
        )
        await self.notify(SETTINGS, str(guild_id))
