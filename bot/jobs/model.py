"""Durable jobs: one row per /imagine, changed only through the state machine's transitions
(the typed verbs of `bot.storage.base.Storage`).

    queued ──► submitting ──► submitted ──► completed ──► delivering ──► delivered
      │            │              │             │              │
      ├────────────┴──► failed ◄──┴─────────────┴──────────────┘
      │            └──► unconfirmed   (the POST may have reached WaveSpeed: never re-sent)
      └──► cancelled  (by the member, while it waited: nothing was sent)

Each transition is checked against TRANSITIONS, written with its event in one statement, and
refused when the job is not in the state the caller expects. A job that ends loses its interaction
token (it is only needed while the placeholder can still be edited) and its owner.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.params import ImagineParams


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
    locale: str = "en-US"  # the requester's language (Discord's interaction.locale): their placeholder
    guild_locale: str | None = None  # the server's (guild_locale): what everyone in the channel sees

    @property
    def public_locale(self) -> str:
        """The language of what the channel sees (the result, the moderation log): the server's,
        or the requester's outside a server."""
        return self.guild_locale or self.locale


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
    owner: str | None = None  # the process running it; None once it has ended
    lease_until: float | None = None  # unix time; another process may adopt it after this

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> JobRecord:
        values = dict(row)
        values["params"] = ImagineParams(**json.loads(values["params"]))
        values["state"] = JobState(values["state"])
        values["interaction_token"] = values["interaction_token"] or ""
        values["channel_nsfw"] = bool(values["channel_nsfw"])
        for derived in ("last_detail", "num_images"):  # kept for queries; the params hold them
            values.pop(derived, None)
        return cls(**values)
