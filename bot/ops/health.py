"""Liveness and readiness, as `GET /healthz` and `GET /readyz` answer them.

- Alive: the process runs and its event loop answers (the answer itself is the proof: the handler
  runs on that loop). Docker's HEALTHCHECK and an orchestrator's liveness probe use it; a process
  that is alive but not ready (still connecting, draining) must not be restarted for it.
- Ready: connected to Discord's gateway (every shard of this process), the database answers a
  statement within `DB_TIMEOUT`, and the bot is accepting jobs (not draining after SIGTERM). Each
  check is named in the JSON answer with what it found, so a 503 says why.

`Readiness` is filled in as `bot.main.serve` brings the pieces up; until then it says what it is
waiting for ("opening the database", "reaching Discord: retrying, attempt 3").
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Protocol

from bot.storage.base import Storage

DB_TIMEOUT = 2.0
# /readyz answers from a database check at most this old: probes from several places cost one statement.
DB_CHECK_CACHE = 1.0


class Gateway(Protocol):
    def is_ready(self) -> bool: ...

    def is_closed(self) -> bool: ...


class Jobs(Protocol):
    @property
    def accepting(self) -> bool: ...


@dataclass(frozen=True)
class Report:
    ready: bool
    checks: dict[str, str]  # name -> what was found ("ok" when fine)

    def json(self) -> dict[str, object]:
        return {"status": "ready" if self.ready else "not ready", "checks": self.checks}


class Readiness:
    def __init__(self, *, db_timeout: float = DB_TIMEOUT) -> None:
        self.waiting_for = "starting"  # what start-up is doing, while the pieces below are missing
        self.storage: Storage | None = None
        self.gateway: Gateway | None = None
        self.jobs: Jobs | None = None
        self._db_timeout = db_timeout
        self._db_checked: tuple[float, str] | None = None
        self._db_lock = asyncio.Lock()

    async def report(self) -> Report:
        checks = {
            "discord": self._discord(),
            "database": await self._database(),
            "jobs": self._jobs(),
        }
        return Report(all(v == "ok" for v in checks.values()), checks)

    def _discord(self) -> str:
        if self.gateway is None:
            return f"not connected ({self.waiting_for})"
        if self.gateway.is_closed():
            return "disconnected (shutting down)"
        if not self.gateway.is_ready():
            return "not connected (connecting to the gateway)"
        shards = getattr(self.gateway, "shards", None)
        if isinstance(shards, dict):
            closed = sorted(shard_id for shard_id, shard in shards.items() if shard.is_closed())
            if closed:
                return f"shard {', '.join(map(str, closed))} disconnected (reconnecting)"
        return "ok"

    async def _database(self) -> str:
        if self.storage is None:
            return f"not open ({self.waiting_for})"
        async with self._db_lock:  # a burst of probes shares one statement
            now = time.monotonic()
            if self._db_checked is not None and now - self._db_checked[0] < DB_CHECK_CACHE:
                return self._db_checked[1]
            try:
                async with asyncio.timeout(self._db_timeout):
                    await self.storage.clock()
                found = "ok"
            except TimeoutError:
                found = f"no answer within {self._db_timeout:g} s"
            except Exception as error:  # the database's own error: its kind, never its text (a URL)
                found = f"unreachable ({type(error).__name__})"
            self._db_checked = (time.monotonic(), found)
            return found

    def _jobs(self) -> str:
        if self.jobs is None:
            return f"not started ({self.waiting_for})"
        return "ok" if self.jobs.accepting else "draining (shutting down: no new jobs)"
