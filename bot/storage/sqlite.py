"""The embedded backend: one SQLite file, WAL mode, versioned migrations run at start-up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import aiosqlite

from bot.storage.base import Storage

log = logging.getLogger(__name__)

# Each entry moves the schema one version up. Append only: never edit a migration that shipped.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # v2: durable jobs. Every /imagine is a row before anything reaches WaveSpeed; every state
    # change is an event. Discord ids are 64-bit integers, which SQLite INTEGER holds.
    """
    CREATE TABLE jobs (
        id                INTEGER PRIMARY KEY AUTOINCREMENT,
        interaction_id    INTEGER NOT NULL UNIQUE,
        interaction_token TEXT,
        application_id    INTEGER NOT NULL,
        guild_id          INTEGER,
        channel_id        INTEGER,
        user_id           INTEGER NOT NULL,
        created_at        REAL NOT NULL,
        params            TEXT NOT NULL,
        file_limit        INTEGER NOT NULL,
        state             TEXT NOT NULL,
        prediction_id     TEXT,
        message_id        INTEGER,
        result_message_id INTEGER,
        submitted_at      REAL,
        finished_at       REAL,
        inference_ms      INTEGER,
        outcome           TEXT,
        updated_at        REAL NOT NULL
    );
    CREATE INDEX jobs_by_state ON jobs (state, id);
    CREATE INDEX jobs_by_created ON jobs (created_at);
    CREATE TABLE job_events (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id     INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        at         REAL NOT NULL,
        from_state TEXT,
        to_state   TEXT NOT NULL,
        detail     TEXT
    );
    CREATE INDEX job_events_by_job ON job_events (job_id, id);
    """,
    # v3: the fair queue's order survives restarts; usage is counted per member and per server.
    """
    ALTER TABLE jobs ADD COLUMN queue_tag REAL;
    CREATE INDEX jobs_by_user ON jobs (user_id, created_at);
    CREATE INDEX jobs_by_guild ON jobs (guild_id, created_at);
    """,
    # v4: moderation. Each server's settings as one JSON document; a job remembers whether its
    # channel was age-restricted, since the NSFW policy depends on it at delivery (maybe after a restart).
    """
    CREATE TABLE guild_settings (
        guild_id   INTEGER PRIMARY KEY,
        settings   TEXT NOT NULL,
        updated_at REAL NOT NULL
    );
    ALTER TABLE jobs ADD COLUMN channel_nsfw INTEGER NOT NULL DEFAULT 0;
    """,
    # v5: result actions. A job may come from a button on another job's result (re-roll, edit).
    """
    ALTER TABLE jobs ADD COLUMN kind TEXT NOT NULL DEFAULT 'imagine';
    ALTER TABLE jobs ADD COLUMN source_job_id INTEGER;
    """,
    # v6: a job's event is written by the same statement that changes it (a trigger), so creating
    # or moving a job is one round trip to the database: at a burst of 1000 commands that is what
    # lets the bot answer each within Discord's 3 seconds.
    """
    ALTER TABLE jobs ADD COLUMN last_detail TEXT;
    CREATE TRIGGER job_created AFTER INSERT ON jobs BEGIN
        INSERT INTO job_events (job_id, at, from_state, to_state, detail)
        VALUES (NEW.id, NEW.updated_at, NULL, NEW.state, NEW.last_detail);
    END;
    CREATE TRIGGER job_moved AFTER UPDATE ON jobs BEGIN
        INSERT INTO job_events (job_id, at, from_state, to_state, detail)
        VALUES (NEW.id, NEW.updated_at, OLD.state, NEW.state, NEW.last_detail);
    END;
    """,
    # v7: the database is the queue (bot.storage.base). Images counted in a column; each unfinished
    # job has an owner process and a lease; the line's round and WaveSpeed's pause in one row;
    # pushed results wait for whichever process runs their job. An event is written only when a
    # statement sets the state, not for a lease renewal.
    """
    DROP TRIGGER job_moved;
    CREATE TRIGGER job_moved AFTER UPDATE OF state ON jobs BEGIN
        INSERT INTO job_events (job_id, at, from_state, to_state, detail)
        VALUES (NEW.id, NEW.updated_at, OLD.state, NEW.state, NEW.last_detail);
    END;
    ALTER TABLE jobs ADD COLUMN num_images INTEGER NOT NULL DEFAULT 1;
    UPDATE jobs SET num_images = COALESCE(CAST(json_extract(params, '$.num_images') AS INTEGER), 1);
    ALTER TABLE jobs ADD COLUMN owner TEXT;
    ALTER TABLE jobs ADD COLUMN lease_until REAL;
    UPDATE jobs SET queue_tag = 0 WHERE queue_tag IS NULL;
    CREATE INDEX jobs_in_line ON jobs (state, queue_tag, id);
    CREATE TABLE queue_state (
        id           INTEGER PRIMARY KEY CHECK (id = 1),
        virtual_time REAL NOT NULL,
        paused_until REAL NOT NULL
    );
    INSERT INTO queue_state (id, virtual_time, paused_until) VALUES (1, COALESCE(
        (SELECT MIN(queue_tag) FROM jobs WHERE state = 'queued'), (SELECT MAX(queue_tag) FROM jobs), 0), 0);
    CREATE TABLE pushes (
        prediction_id TEXT PRIMARY KEY,
        body          TEXT NOT NULL,
        received_at   REAL NOT NULL
    );
    """,
    # v8: each job speaks its requester's language, and the channel its server's, after a restart too.
    """
    ALTER TABLE jobs ADD COLUMN locale TEXT NOT NULL DEFAULT 'en-US';
    ALTER TABLE jobs ADD COLUMN guild_locale TEXT;
    """,
)


# RETURNING (3.35) and UPDATE ... FROM (3.33): every write that changes a job uses them.
MIN_SQLITE = (3, 35)


class SqliteTooOldError(RuntimeError):
    """The SQLite library this Python was built with lacks what the statements need."""


# The database holds live interaction tokens and members' prompts: owner-only, whatever the umask.
DIRECTORY_MODE = 0o700
FILE_MODE = 0o600
# SQLite's files beside the database. It creates them with the database file's own mode.
SIDECARS = ("-wal", "-shm", "-journal")


def _private_files(database: Path) -> None:
    """Make the database file owner-only before SQLite opens it, and fix an older, looser one.

    Folders the bot creates are 0700. A folder that already exists is left as it is: the host chose
    it (a Docker volume, a shared data directory) and the files in it are what hold the data. SQLite
    creates the -wal and -shm files with the mode of the database file (not from the umask), so a
    0600 database gives 0600 companions; ones left by an older run are tightened here too."""
    missing = [folder for folder in (database.parent, *database.parent.parents) if not folder.exists()]
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=DIRECTORY_MODE)
        except FileExistsError:
            continue  # made by someone else meanwhile: theirs, not ours
        os.chmod(folder, DIRECTORY_MODE)  # mkdir's mode went through the umask
    if not database.exists():
        with contextlib.suppress(FileExistsError):
            os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    for file in (database, *(database.with_name(database.name + suffix) for suffix in SIDECARS)):
        try:
            if stat.S_IMODE(file.stat().st_mode) != FILE_MODE:
                os.chmod(file, FILE_MODE)
        except FileNotFoundError:
            continue
        except PermissionError:
            log.warning("cannot make %s owner-only (it belongs to another user): others may read it", file)


class SqliteStorage(Storage):
    """One SQLite file in WAL mode, one connection, every statement its own transaction: one process
    at a time (the embedded default). Claims need no lock: SQLite runs one statement at a time."""

    backend = "sqlite"
    NOW = "((julianday('now') - 2440587.5) * 86400.0)"
    GREATEST = "MAX"
    LEAST = "MIN"
    UPDATED = "*"

    def __init__(self, connection: aiosqlite.Connection, **options: Any) -> None:
        super().__init__(**options)
        self._db = connection
        self._db.row_factory = aiosqlite.Row

    @classmethod
    async def open(cls, path: str, **options: Any) -> SqliteStorage:
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise SqliteTooOldError(
                f"SQLite {'.'.join(map(str, MIN_SQLITE))} or newer is needed, and this Python has "
                f"{sqlite3.sqlite_version}: use the Docker image, or a Python built with a newer SQLite"
            )
        if path not in ("", ":memory:"):
            _private_files(Path(path))
        # Autocommit: every statement is its own transaction (with its trigger); multi-statement
        # changes (the migrations) open their own.
        connection = await aiosqlite.connect(path, isolation_level=None)
        storage = cls(connection, **options)
        try:
            # Zero what a DELETE or UPDATE frees: a finished job's interaction token (nulled) and a
            # pruned job's prompt would otherwise stay readable in the file's free space, and in
            # every backup of it, long after the bot forgot them.
            await connection.execute("PRAGMA secure_delete=ON")
            await connection.execute("PRAGMA journal_mode=WAL")
            # In WAL mode NORMAL still survives a crash or SIGKILL of the bot (only a power cut can lose
            # the last commits) and skips an fsync per commit, which /imagine pays on every request.
            await connection.execute("PRAGMA synchronous=NORMAL")
            await connection.execute("PRAGMA foreign_keys=ON")
            await storage.migrate()
        except BaseException:
            await connection.close()
            raise
        log.debug("database %s open: owner-only files, secure_delete on", path)
        return storage

    async def _rows(self, sql: str, args: Sequence[object] = ()) -> list[Mapping[str, Any]]:
        # Read in one trip to the database thread, like every read here: a statement left half-read
        # across an `await` (execute, then fetchone) keeps its working memory (~130 KB for an
        # UPDATE ... RETURNING) and makes every concurrent caller prepare its own copy, so a burst
        # of 1000 jobs once held 130 MB of SQLite memory.
        return list(await self._db.execute_fetchall(sql, tuple(args)))  # type: ignore[arg-type]

    async def _run(self, sql: str, args: Sequence[object] = ()) -> int:
        cursor = await self._db.execute(sql, tuple(args))
        return cursor.rowcount

    async def notify(self, channel: str, payload: str = "") -> None:
        """One process: the listeners are all here."""
        asyncio.get_running_loop().call_soon(self._wake, channel, payload)

    async def close(self) -> None:
        await self._db.close()

    async def __aenter__(self) -> SqliteStorage:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def execute(self, sql: str) -> list[Mapping[str, Any]]:
        """A raw statement, for maintenance tests and PRAGMAs; the bot itself never calls it."""
        return await self._rows(sql)

    async def schema_version(self) -> int:
        row = await self._one("PRAGMA user_version")
        return int(dict(row)["user_version"]) if row else 0

    async def migrate(self) -> None:
        current = await self.schema_version()
        if current > len(MIGRATIONS):
            raise RuntimeError(
                f"the database is at schema version {current}, newer than this bot ({len(MIGRATIONS)}); "
                "run a newer version of the bot or restore a backup"
            )
        for version, script in enumerate(MIGRATIONS[current:], start=current + 1):
            await self._db.executescript(f"BEGIN; {script} PRAGMA user_version = {version}; COMMIT;")
            log.info("database migrated to schema version %d", version)
