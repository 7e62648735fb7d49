"""Durable jobs: one row per /imagine, changed only through the state machine's transitions.

    queued ──► submitting ──► submitted ──► completed ──► delivering ──► delivered
      │            │              │             │              │
      ├────────────┴──► failed ◄──┴─────────────┴──────────────┘
      │            └──► unconfirmed   (the POST may have reached WaveSpeed: never re-sent)
      └──► cancelled  (by the member, while it waited: nothing was sent)

Each transition is checked against TRANSITIONS, written with its event in one transaction, and
refused when the job is not in the state the caller expects. A job that ends loses its interaction
token: it is only needed while the placeholder can still be edited.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import time
from dataclasses import dataclass
from typing import Any

import aiosqlite

from bot.params import ImagineParams
from bot.store import fetch_one


class JobState(enum.StrEnum):
    QUEUED = "queued"
    SUBMITTING = "submitting"
    SUBMITTED = "submitted"
    COMPLETED = "completed"
    DELIVERING = "delivering"
    DELIVERED = "delivered"
    FAILED = "failed"
    UNCONFIRMED = "unconfirmed"
    CANCELLED = "cancelled"


S = JobState
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    # queued -> queued records a fact without moving on (the placeholder was posted).
    S.QUEUED: frozenset({S.QUEUED, S.SUBMITTING, S.FAILED, S.CANCELLED}),
    # submitting -> queued: WaveSpeed provably refused it (429), so it may wait and go again.
    S.SUBMITTING: frozenset({S.SUBMITTED, S.QUEUED, S.FAILED, S.UNCONFIRMED}),
    S.SUBMITTED: frozenset({S.COMPLETED, S.FAILED}),
    S.COMPLETED: frozenset({S.DELIVERING, S.FAILED}),
    S.DELIVERING: frozenset({S.DELIVERING, S.DELIVERED, S.FAILED}),
    S.DELIVERED: frozenset(),
    S.FAILED: frozenset(),
    S.UNCONFIRMED: frozenset(),
    S.CANCELLED: frozenset(),
}
TERMINAL = frozenset(state for state, targets in TRANSITIONS.items() if not targets)
# Columns a transition may set besides the state.
FIELDS = frozenset(
    {
        "prediction_id",
        "message_id",
        "result_message_id",
        "submitted_at",
        "finished_at",
        "inference_ms",
        "outcome",
        "queue_tag",
    }
)


class InvalidTransitionError(RuntimeError):
    pass


@dataclass(frozen=True)
class NewJob:
    interaction_id: int
    interaction_token: str
    application_id: int
    guild_id: int | None
    channel_id: int | None
    user_id: int
    created_at: float  # the interaction's creation time, unix seconds
    params: ImagineParams
    file_limit: int
    channel_nsfw: bool = False  # the channel is age-restricted
    kind: str = "imagine"  # or "reroll", "edit": started from a button or /imagine-edit
    source_job_id: int | None = None  # the job whose result the button was on


@dataclass(frozen=True)
class JobRecord(NewJob):
    id: int = 0
    state: JobState = S.QUEUED
    prediction_id: str | None = None
    message_id: int | None = None
    result_message_id: int | None = None
    submitted_at: float | None = None
    finished_at: float | None = None
    inference_ms: int | None = None
    outcome: str | None = None
    updated_at: float = 0.0
    queue_tag: float | None = None

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL

    @classmethod
    def from_row(cls, row: aiosqlite.Row) -> JobRecord:
        values = dict(row)
        values["params"] = ImagineParams(**json.loads(values["params"]))
        values["state"] = JobState(values["state"])
        values["interaction_token"] = values["interaction_token"] or ""
        values["channel_nsfw"] = bool(values["channel_nsfw"])
        values.pop("last_detail", None)
        return cls(**values)


class JobStore:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        self._db.row_factory = aiosqlite.Row

    @property
    def db(self) -> aiosqlite.Connection:
        return self._db

    async def create(self, job: NewJob) -> JobRecord:
        """Write a new queued job (its "created" event comes with it, by trigger): one statement."""
        now = time.time()
        values = {f.name: getattr(job, f.name) for f in dataclasses.fields(NewJob)}
        values.update(params=json.dumps(dataclasses.asdict(job.params)), state=S.QUEUED.value, updated_at=now)
        values["last_detail"] = "created"
        columns = ", ".join(values)
        cursor = await self._db.execute(
            f"INSERT INTO jobs ({columns}) VALUES ({', '.join('?' * len(values))})", tuple(values.values())
        )
        assert cursor.lastrowid is not None
        return JobRecord(
            **{f.name: getattr(job, f.name) for f in dataclasses.fields(NewJob)}, id=cursor.lastrowid, updated_at=now
        )

    async def get(self, job_id: int) -> JobRecord:
        row = await fetch_one(self._db, "SELECT * FROM jobs WHERE id = ?", (job_id,))
        if row is None:
            raise KeyError(job_id)
        return JobRecord.from_row(row)

    async def transition(self, job_id: int, to: JobState, *, detail: str = "", **fields: Any) -> JobRecord:
        """Move a job to `to`, setting `fields` with it; the only way code changes a job. The UPDATE
        only matches a job in a state that may move to `to`, and writes the event by trigger."""
        unknown = set(fields) - FIELDS
        if unknown:
            raise ValueError(f"not a job field: {sorted(unknown)}")
        sources = [state.value for state, targets in TRANSITIONS.items() if to in targets]
        values: dict[str, Any] = {**fields, "state": to.value, "updated_at": time.time(), "last_detail": detail or None}
        if to in TERMINAL:
            values["interaction_token"] = None
        assignments = ", ".join(f"{name} = ?" for name in values)
        marks = ", ".join("?" * len(sources))
        row = await fetch_one(
            self._db,
            f"UPDATE jobs SET {assignments} WHERE id = ? AND state IN ({marks}) RETURNING *",
            (*values.values(), job_id, *sources),
        )
        if row is None:
            current = await self.get(job_id)  # raises KeyError for a job that doesn't exist
            raise InvalidTransitionError(f"job {job_id}: {current.state} -> {to} is not a transition")
        return JobRecord.from_row(row)

    async def unfinished(self) -> list[JobRecord]:
        """Jobs a restart must pick up, oldest first."""
        marks = ", ".join("?" * len(TERMINAL))
        query = f"SELECT * FROM jobs WHERE state NOT IN ({marks}) ORDER BY id"
        rows = await self._db.execute_fetchall(query, tuple(s.value for s in TERMINAL))
        return [JobRecord.from_row(row) for row in rows]

    async def events(self, job_id: int) -> list[tuple[str | None, str, str | None]]:
        query = "SELECT from_state, to_state, detail FROM job_events WHERE job_id = ? ORDER BY id"
        rows = await self._db.execute_fetchall(query, (job_id,))
        return [(row[0], row[1], row[2]) for row in rows]

    async def prune(self, *, older_than_days: float) -> int:
        """Delete finished jobs (and their events) created more than `older_than_days` ago."""
        cutoff = time.time() - older_than_days * 86400
        marks = ", ".join("?" * len(TERMINAL))
        cursor = await self._db.execute(
            f"DELETE FROM jobs WHERE created_at < ? AND state IN ({marks})",
            (cutoff, *(s.value for s in TERMINAL)),
        )
        return cursor.rowcount
