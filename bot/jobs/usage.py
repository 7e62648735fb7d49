"""Usage counted from the job store, in images. Nothing is kept besides the jobs themselves, so the
counters and budgets survive restarts and shrink only when retention prunes old jobs."""

from __future__ import annotations

from dataclasses import dataclass

import aiosqlite

from bot.jobs.store import TERMINAL, JobState
from bot.limits import Usage, next_utc_midnight
from bot.store import fetch_one

DAY = 86400.0
# Jobs that cost nothing: refused by WaveSpeed (failed predictions are refunded) or cancelled.
FREE = (JobState.FAILED.value, JobState.CANCELLED.value)
ACTIVE = tuple(s.value for s in JobState if s not in TERMINAL)

_COUNTED = f"state NOT IN ({', '.join('?' * len(FREE))})"
_IMAGES = "CAST(json_extract(params, '$.num_images') AS INTEGER)"


def start_of_day(now: float) -> float:
    return next_utc_midnight(now) - DAY


async def _sum(db: aiosqlite.Connection, where: str, args: tuple[object, ...]) -> int:
    query = f"SELECT COALESCE(SUM({_IMAGES}), 0) FROM jobs WHERE {_COUNTED} AND {where}"
    row = await fetch_one(db, query, (*FREE, *args))
    return int(row[0]) if row else 0


async def usage_for(
    db: aiosqlite.Connection, *, user_id: int, guild_id: int | None, now: float, window_seconds: float
) -> Usage:
    active_marks = ", ".join("?" * len(ACTIVE))
    user_active = await _sum(db, f"user_id = ? AND state IN ({active_marks})", (user_id, *ACTIVE))
    query = f"SELECT created_at, {_IMAGES} FROM jobs WHERE {_COUNTED} AND user_id = ? AND created_at > ? ORDER BY created_at"
    rows = await db.execute_fetchall(query, (*FREE, user_id, now - window_seconds))
    window = tuple((float(row[0]), int(row[1])) for row in rows)
    today = start_of_day(now)
    guild_today = await _sum(db, "guild_id = ? AND created_at >= ?", (guild_id, today)) if guild_id else 0
    global_today = await _sum(db, "created_at >= ?", (today,))
    return Usage(user_active=user_active, user_window=window, guild_today=guild_today, global_today=global_today)


async def images_today(db: aiosqlite.Connection, *, now: float) -> int:
    """Images counted today (UTC) across every server and DM: the host's figure."""
    return await _sum(db, "created_at >= ?", (start_of_day(now),))


@dataclass(frozen=True)
class Totals:
    today: int
    last_7_days: int
    last_30_days: int


async def totals(
    db: aiosqlite.Connection, *, now: float, user_id: int | None = None, guild_id: int | None = None
) -> Totals:
    """Images counted for a member or a server: today (UTC), and the last 7 and 30 days."""
    column, value = ("user_id", user_id) if user_id is not None else ("guild_id", guild_id)
    where = f"{column} = ? AND created_at >= ?"
    return Totals(
        today=await _sum(db, where, (value, start_of_day(now))),
        last_7_days=await _sum(db, where, (value, now - 7 * DAY)),
        last_30_days=await _sum(db, where, (value, now - 30 * DAY)),
    )
