"""Where the PostgreSQL tests find their server, and a fresh database for each test.

One variable says where the server is: TEST_POSTGRES_URL (any database the user may connect to;
each test gets its own database beside it, created from template0 and dropped with FORCE after).
Without a server the PostgreSQL tests are skipped with one line saying why, unless
REQUIRE_POSTGRES=1 (what CI sets): then they fail, so a CI run can never pass with them skipped.
"""

from __future__ import annotations

import os
import uuid
from urllib.parse import urlsplit, urlunsplit

import asyncpg

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
CONNECT_TIMEOUT = 5.0


def server_url() -> str:
    return os.environ.get("TEST_POSTGRES_URL") or DEFAULT_URL


def required() -> bool:
    return os.environ.get("REQUIRE_POSTGRES") == "1"


def database_url(url: str, name: str) -> str:
    """`url` with its database replaced by `name` (user, host, port and options kept)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def unreachable(url: str) -> str | None:
    """Why the server at `url` cannot be used, or None if it can."""
    try:
        connection = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT)
    except Exception as error:  # refused, timed out, auth, no such database: all mean "no server"
        return f"{type(error).__name__}: {error}".strip()
    await connection.close()
    return None


UNREACHABLE = "PostgreSQL not reachable at TEST_POSTGRES_URL="


def unreachable_reason(url: str, error: str) -> str:
    return f"{UNREACHABLE}{url}: {error}"


async def create_database(url: str) -> str:
    """A new, empty database on the server at `url`; returns its URL."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    connection = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT)
    try:
        await connection.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    finally:
        await connection.close()
    return database_url(url, name)


async def drop_database(url: str, database: str) -> None:
    """Drop `database` (a URL from create_database), closing whatever a test left connected."""
    name = urlsplit(database).path.lstrip("/")
    connection = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()
