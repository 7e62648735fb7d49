"""The bot's database read (or, to set a scene, changed) directly by a test, on either backend.

`rows(url, sql, *args)` takes the bot's DATABASE_URL and one statement with `?` placeholders. SQLite
is read with `sqlite3`; PostgreSQL through a short-lived asyncpg connection on an event loop of its
own in a worker thread, so both are plain blocking calls that work from sync code, also inside a
running event loop (`wait_until(lambda: rows(...) == ...)`).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import asyncpg

T = TypeVar("T")
SQLITE = "sqlite:///"
TIMEOUT = 10.0


def is_sqlite(url: str) -> bool:
    return url.startswith(SQLITE)


def rows(url: str, sql: str, *args: object) -> list[tuple[Any, ...]]:
    """Every row of `sql`, as tuples."""
    if is_sqlite(url):
        with contextlib.closing(sqlite3.connect(url.removeprefix(SQLITE))) as db, db:
            return [tuple(row) for row in db.execute(sql, args)]

    async def fetch(connection: asyncpg.Connection[asyncpg.Record]) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in await connection.fetch(_numbered(sql), *args, timeout=TIMEOUT)]

    return _on_postgres(url, fetch)


def execute(url: str, sql: str, *args: object) -> None:
    """Run one statement that changes the database, committed when this returns."""
    if is_sqlite(url):
        with contextlib.closing(sqlite3.connect(url.removeprefix(SQLITE))) as db, db:
            db.execute(sql, args)
        return

    async def run(connection: asyncpg.Connection[asyncpg.Record]) -> None:
        await connection.execute(_numbered(sql), *args, timeout=TIMEOUT)

    _on_postgres(url, run)


def _numbered(sql: str) -> str:
    """`?` placeholders as PostgreSQL's `$1..$n` (the tests' statements hold no `?` in a literal)."""
    parts = sql.split("?")
    return "".join(part + (f"${n}" if n < len(parts) else "") for n, part in enumerate(parts, start=1))


def _on_postgres(url: str, use: Callable[[asyncpg.Connection[asyncpg.Record]], Awaitable[T]]) -> T:
    async def connected() -> T:
        connection = await asyncpg.connect(url, timeout=TIMEOUT)
        try:
            return await use(connection)
        finally:
            await connection.close(timeout=TIMEOUT)

    # asyncio.run refuses to start inside the caller's running loop; a thread has none.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="dbread") as thread:
        return thread.submit(asyncio.run, connected()).result()
