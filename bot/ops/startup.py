"""Start-up against the real services: one line per failure, retries for what may pass.

Every failure at start-up is one of two kinds, each a typed value:
- `StartupError`: it will not pass by waiting (a refused Discord token, a database that cannot be
  opened or is from a newer version). `python -m bot` logs its one line, naming the cause and what
  to do, and exits with status 1.
- `Unavailable`: it may pass (a service unreachable, a 5xx, a timeout, PostgreSQL still starting).
  `retrying` logs one line per attempt and tries again with exponential backoff, until it works or
  the bot is asked to stop; it is never fatal.

Neither carries a secret: messages name the setting and the host, never a token, key or password.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import urlsplit

import aiohttp

from bot.config import Settings
from bot.storage import open_storage
from bot.storage.base import Storage
from bot.storage.sqlite import SqliteTooOldError
from bot.wavespeed.client import WaveSpeedClient
from bot.wavespeed.errors import AuthenticationError, InvalidRequestError, WaveSpeedError

log = logging.getLogger(__name__)

T = TypeVar("T")
FIRST_DELAY = 1.0
MAX_DELAY = 60.0
PROBE_TIMEOUT = 10.0


class StartupError(Exception):
    """Start-up cannot go on: `str()` is the one line to log (the cause, then what to do)."""


class Unavailable(Exception):
    """A service did not answer as it should, for now: worth another try."""


class Stopped(Exception):
    """Asked to stop while waiting for a service."""


async def retrying(
    attempt: Callable[[], Awaitable[T]],
    *,
    stop: asyncio.Event,
    on_wait: Callable[[str], None] | None = None,
    first_delay: float = FIRST_DELAY,
    max_delay: float = MAX_DELAY,
) -> T:
    """`attempt()` until it returns; after each `Unavailable`, one WARNING line and a pause that
    doubles up to `max_delay` (with jitter). Raises `Stopped` if `stop` is set while waiting."""
    number = 0
    while True:
        number += 1
        try:
            return await attempt()
        except Unavailable as error:
            delay = min(max_delay, first_delay * 2 ** (number - 1)) * random.uniform(0.8, 1.0)
            log.warning("%s; retrying in %.0f s (attempt %d)", error, delay, number)
            if on_wait is not None:
                on_wait(f"{error}: retrying, attempt {number}")
        try:
            await asyncio.wait_for(stop.wait(), delay)
        except TimeoutError:
            continue
        raise Stopped


def _where(url: str) -> str:
    """A database URL without its password: what a message may show."""
    if url.startswith("sqlite:///"):
        return url.removeprefix("sqlite:///")
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path}"


async def open_database(settings: Settings) -> Storage:
    """The storage, opened and migrated; `StartupError` or `Unavailable` otherwise."""
    url, where = settings.database_url, _where(settings.database_url)
    try:
        return await open_storage(url, lease_seconds=settings.lease_seconds)
    except SqliteTooOldError as error:
        raise StartupError(f"cannot open the SQLite database {where}: {error}") from None
    except RuntimeError as error:
        if "newer than this bot" in str(error):  # the migrations' own one line says what to do
            raise StartupError(f"the database {where} is from a newer version of the bot: {error}") from None
        raise
    except (sqlite3.Error, OSError) as error:
        if url.startswith("sqlite:///"):
            raise StartupError(
                f"cannot open the SQLite database {where} ({type(error).__name__}: {error}): check DATABASE_URL, "
                "that its folder exists or can be created, and that the bot's user may write there"
            ) from None
        raise Unavailable(f"cannot reach PostgreSQL at {where} ({type(error).__name__})") from None
    except Exception as error:
        raise _postgres_error(error, where) from None


def _postgres_error(error: Exception, where: str) -> Exception:
    import asyncpg  # only with DATABASE_URL=postgresql://...

    if isinstance(error, asyncpg.CannotConnectNowError | asyncpg.TooManyConnectionsError | TimeoutError):
        return Unavailable(f"PostgreSQL at {where} is not taking connections yet ({type(error).__name__})")
    if isinstance(error, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError):
        return StartupError(f"PostgreSQL at {where} refused the user or password in DATABASE_URL: fix DATABASE_URL")
    if isinstance(error, asyncpg.InvalidCatalogNameError):
        return StartupError(f"the database {where} does not exist: create it (createdb) or fix DATABASE_URL")
    if isinstance(error, asyncpg.PostgresError):
        return StartupError(f"PostgreSQL at {where} refused to open the database ({type(error).__name__}: {error})")
    return error


async def check_discord(session: aiohttp.ClientSession, settings: Settings) -> None:
    """The token is accepted (`GET /users/@me`), or why not."""
    url = f"{settings.discord_api_url}/users/@me"
    headers = {"Authorization": f"Bot {settings.discord_token.get_secret_value()}"}
    try:
        async with session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT)) as answer:
            status = answer.status
    except (aiohttp.ClientError, OSError, TimeoutError) as error:
        raise Unavailable(f"cannot reach Discord at {settings.discord_api_url} ({type(error).__name__})") from None
    if status == 401:
        raise StartupError(
            "Discord refused DISCORD_TOKEN: copy the bot token again (Developer Portal > Bot > Reset Token)"
        )
    if status == 429 or status >= 500:
        raise Unavailable(f"Discord answered HTTP {status}")
    if status != 200:
        raise StartupError(f"Discord answered HTTP {status} to the token check: check DISCORD_API_URL")


async def check_wavespeed(wavespeed: WaveSpeedClient, base_url: str) -> float | None:
    """WaveSpeed answers; returns the balance in dollars (None if it would not tell). A refused key
    is one ERROR line, not a stop: a new key may take minutes to activate, an account may be
    suspended for a while, and each job then tells its member what happened."""
    try:
        return await wavespeed.balance(seconds=PROBE_TIMEOUT)
    except AuthenticationError:
        log.error(
            "WaveSpeed refused WAVESPEED_API_KEY: every /imagine will fail until it is fixed. Copy the key again "
            "(wavespeed.ai > Access Keys; a new key may take a few minutes to work), then restart the bot"
        )
        return None
    except InvalidRequestError as error:  # a proxy without the balance endpoint: jobs may still work
        log.warning("could not read the WaveSpeed balance (%s): low-balance warnings are off", error)
        return None
    except WaveSpeedError as error:
        raise Unavailable(f"cannot reach WaveSpeed at {base_url} ({error})") from None
