"""What the bot keeps about one member, read and erased: `/imagine-history` and `/imagine-forget-me`.

Mixed into `bot.storage.base.Storage` (same SQL on both backends). Erasing keeps only what the
budgets still count: a finished job that cost something and falls inside today (UTC) or the
member's rolling window keeps its member, server, time, state and number of images, and nothing
else (no prompt, options, token, channel, message or prediction), marked `forgotten` and deleted as
soon as those days have passed (`prune_forgotten`). Everything else of the member's finished jobs,
their events and any pushed result of theirs is deleted. Jobs still waiting or running are left to
finish (or be cancelled) first: erasing them would break a job WaveSpeed is making.
"""

from __future__ import annotations

import abc
import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bot.jobs.model import TERMINAL, JobRecord, JobState
from bot.params import ImagineParams

_TERMINAL = tuple(s.value for s in TERMINAL)
_FREE = (JobState.FAILED.value, JobState.CANCELLED.value)  # cost nothing: no budget counts them
FORGOTTEN = "forgotten"  # the `kind` of a job erased but for its image count
PENDING = "forget-me:"  # meta key prefix: a member's erasure waits for their running jobs


def _marks(values: Sequence[object]) -> str:
    return ", ".join("?" * len(values))


@dataclass(frozen=True)
class Forgotten:
    deleted: int  # jobs deleted with everything they held
    kept_counts: int  # jobs kept as an image count only, until their day has passed


class MemberData(abc.ABC):
    @abc.abstractmethod
    async def _rows(self, sql: str, args: Sequence[object] = ()) -> list[Mapping[str, Any]]: ...

    @abc.abstractmethod
    async def _run(self, sql: str, args: Sequence[object] = ()) -> int: ...

    async def history(self, *, user_id: int, guild_id: int | None, limit: int, offset: int = 0) -> list[JobRecord]:
        """A member's own jobs in one server (or, with `guild_id` None, in DMs), newest first."""
        where = "guild_id = ?" if guild_id is not None else "guild_id IS NULL"
        rows = await self._rows(
            f"SELECT * FROM jobs WHERE user_id = ? AND {where} AND kind <> ? "
            "ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?",
            (user_id, *(() if guild_id is None else (guild_id,)), FORGOTTEN, limit, offset),
        )
        return [JobRecord.from_row(row) for row in rows]

    async def member_jobs(self, user_id: int, *, before: float) -> tuple[int, list[JobRecord]]:
        """How many finished jobs the member has (created up to `before`, erased ones aside), and
        their unfinished ones."""
        rows = await self._rows(
            f"SELECT * FROM jobs WHERE user_id = ? AND created_at <= ? AND kind <> ? AND state NOT IN ({_marks(_TERMINAL)})"
            " ORDER BY id",
            (user_id, before, FORGOTTEN, *_TERMINAL),
        )
        count = await self._rows(
            f"SELECT COUNT(*) AS n FROM jobs WHERE user_id = ? AND created_at <= ? AND kind <> ? "
            f"AND state IN ({_marks(_TERMINAL)})",
            (user_id, before, FORGOTTEN, *_TERMINAL),
        )
        return int(count[0]["n"]), [JobRecord.from_row(row) for row in rows]

    async def forget_member(self, user_id: int, *, before: float, keep_counts_since: float) -> Forgotten:
        """Erase the member's finished jobs created up to `before` (see the module's docstring).
        Those created since `keep_counts_since` that count toward a budget stay as counts only."""
        finished = (user_id, before, *_TERMINAL)
        mine = f"user_id = ? AND created_at <= ? AND state IN ({_marks(_TERMINAL)})"
        await self._run(
            f"DELETE FROM pushes WHERE prediction_id IN (SELECT prediction_id FROM jobs WHERE {mine})", finished
        )
        deleted = await self._run(
            f"DELETE FROM jobs WHERE {mine} AND (created_at < ? OR state IN ({_marks(_FREE)}))",
            (*finished, keep_counts_since, *_FREE),
        )
        counted = f"{mine} AND kind <> ?"
        await self._run(
            f"DELETE FROM job_events WHERE job_id IN (SELECT id FROM jobs WHERE {counted})", (*finished, FORGOTTEN)
        )
        blank = json.dumps(dataclasses.asdict(ImagineParams(prompt="")))
        kept = await self._run(
            "UPDATE jobs SET params = ?, kind = ?, interaction_token = NULL, channel_id = NULL, prediction_id = NULL, "
            "message_id = NULL, result_message_id = NULL, source_job_id = NULL, outcome = NULL, last_detail = NULL, "
            f"inference_ms = NULL, submitted_at = NULL, locale = 'en-US', guild_locale = NULL WHERE {counted}",
            (blank, FORGOTTEN, *finished, FORGOTTEN),
        )
        return Forgotten(deleted=deleted, kept_counts=kept)

    async def prune_forgotten(self, *, before: float) -> int:
        """Delete the image counts kept for erased members once no budget counts them any more."""
        return await self._run("DELETE FROM jobs WHERE kind = ? AND created_at < ?", (FORGOTTEN, before))

    async def pending_erasures(self) -> list[tuple[int, float]]:
        """Members whose erasure waits for their running jobs: (member, asked at)."""
        rows = await self._rows("SELECT key, value FROM meta WHERE key LIKE ?", (PENDING + "%",))
        return [(int(str(r["key"]).removeprefix(PENDING)), float(r["value"])) for r in rows]

    async def set_pending_erasure(self, user_id: int, asked_at: float | None) -> None:
        """Note (or, with None, clear) that a member's erasure waits for their running jobs."""
        key = f"{PENDING}{user_id}"
        if asked_at is None:
            await self._run("DELETE FROM meta WHERE key = ?", (key,))
            return
        await self._run(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, repr(asked_at)),
        )
