"""The SQLite store: migrations from an empty file, re-opening, and a database from a newer bot."""

from __future__ import annotations

import aiosqlite
import pytest

from bot.storage.sqlite import MIGRATIONS, SqliteStorage

pytestmark = pytest.mark.sqlite_only  # the SQLite file and its schema versions


async def test_migrates_an_empty_file_and_reopens_without_migrating_again(tmp_path):
    path = str(tmp_path / "nested" / "bot.db")
    async with await SqliteStorage.open(path) as store:
        assert await store.schema_version() == len(MIGRATIONS)
        await store.set_meta("k", "v1")
        await store.set_meta("k", "v2")
    async with await SqliteStorage.open(path) as store:
        assert await store.schema_version() == len(MIGRATIONS)
        assert await store.get_meta("k") == "v2" and await store.get_meta("missing") is None
    async with aiosqlite.connect(path) as raw, raw.execute("PRAGMA journal_mode") as cursor:
        assert (await cursor.fetchone()) == ("wal",)


async def test_refuses_a_database_from_a_newer_bot(tmp_path):
    path = str(tmp_path / "bot.db")
    async with aiosqlite.connect(path) as raw:
        await raw.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
        await raw.commit()
    with pytest.raises(RuntimeError, match="newer than this bot"):
        await SqliteStorage.open(path)
