"""Where the bot keeps everything: `open_storage(DATABASE_URL)` gives the one `Storage` interface,
on SQLite (the embedded default, one process) or PostgreSQL (several processes)."""

from __future__ import annotations

from typing import Any

from bot.storage.base import Storage


async def open_storage(url: str, **options: Any) -> Storage:
    """`sqlite:///path/to/file.db` or `postgresql://user@host:port/database`, migrated and ready."""
    if url.startswith("sqlite:///"):
        from bot.storage.sqlite import SqliteStorage

        return await SqliteStorage.open(url.removeprefix("sqlite:///"), **options)
    if url.startswith(("postgresql://", "postgres://")):
        from bot.storage.postgres import PostgresStorage  # asyncpg is needed only here

        storage: Storage = await PostgresStorage.open(url, **options)
        return storage
    raise ValueError("DATABASE_URL must start with sqlite:/// or postgresql://")
