"""What the fake servers received, a way for tests to wait for it without sleeping, and how the fakes
serve on 127.0.0.1."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web


@dataclass(frozen=True)
class UploadedFile:
    field: str
    filename: str
    size: int
    content_type: str | None
    data: bytes = dataclasses.field(repr=False)


@dataclass(frozen=True)
class Recorded:
    """One HTTP request as a fake server saw it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any
    body: bytes = dataclasses.field(repr=False)
    files: tuple[UploadedFile, ...] = ()
    status: int = 0
    at: float = dataclasses.field(default_factory=time.monotonic)

    def text(self) -> str:
        """Everything a secret could hide in: the path, the query, the headers and the body."""
        parts = [self.method, self.path, repr(self.query), repr(self.headers)]
        parts.append(self.body.decode("utf-8", "replace"))
        return "\n".join(parts)


Predicate = Callable[[Recorded], bool]


class RequestLog:
    """An append-only list of requests with an awaitable `wait_for`.

    Tests wait on a condition with a deadline instead of sleeping, so a slow machine makes a test
    slower, never flaky, and a missing request fails with the deadline message.
    """

    def __init__(self) -> None:
        self._items: list[Recorded] = []
        self._changed = asyncio.Condition()

    def __iter__(self) -> Iterator[Recorded]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> Recorded:
        return self._items[index]

    async def add(self, item: Recorded) -> None:
        async with self._changed:
            self._items.append(item)
            self._changed.notify_all()

    def matching(self, predicate: Predicate) -> list[Recorded]:
        return [item for item in self._items if predicate(item)]

    async def wait_for(self, predicate: Predicate, *, count: int = 1, timeout: float = 10.0) -> list[Recorded]:
        """Wait until at least `count` recorded requests match; return all that match."""

        async def _wait() -> list[Recorded]:
            async with self._changed:
                while len(found := self.matching(predicate)) < count:
                    await self._changed.wait()
                return found

        try:
            return await asyncio.wait_for(_wait(), timeout)
        except TimeoutError:
            seen = "\n".join(f"  {r.method} {r.path} -> {r.status}" for r in self._items[-20:])
            raise AssertionError(
                f"timed out after {timeout}s waiting for {count} matching request(s); last seen:\n{seen}"
            ) from None


def any_secret_in(requests: RequestLog | list[Recorded], *secrets: str) -> list[str]:
    """The requests whose path, query, headers or body contain any of the secrets."""
    return [f"{r.method} {r.path}" for r in requests if any(s and s in r.text() for s in secrets)]


async def serve_on_loopback(app: web.Application, port: int = 0) -> tuple[web.AppRunner, int]:
    """Serve `app` on 127.0.0.1 at `port` (0: a free one); returns the runner (to clean up) and the port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, runner.addresses[0][1]
