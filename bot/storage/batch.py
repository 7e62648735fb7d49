"""Group commit: writes asked for while one is on its way to the database go together in the next.

A burst of commands asks for hundreds of identical writes (a new job, a placeholder recorded, a
wake-up) within milliseconds. One statement each is one trip to SQLite's thread or PostgreSQL's
socket each, and at 3000 commands those trips alone take longer than Discord's 3-second window
(measured: 0.64 ms a job on SQLite, 1.1 ms on PostgreSQL, for the two writes of an admission).
A `Batcher` takes each caller's item, and while no write is running it starts one on the next turn
of the event loop (so every command handled in this turn joins it); items that arrive while a
write runs wait for it and go together in the one after. Nothing waits on a timer: a lone command
is written at once, exactly as before.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from bot.tasks import keep

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """`await batcher(item)` returns `write([..., item, ...])`'s result for that item.

    `write` gets at most `max_size` items and returns one result per item, in order. If a batch
    fails, each of its items is written alone, so one bad item (a duplicate, say) fails only its
    own caller. A caller cancelled before its batch was taken is left out of it; one cancelled
    after is written anyway (the statement is already on its way)."""

    def __init__(self, write: Callable[[list[T]], Awaitable[Sequence[R]]], *, name: str, max_size: int = 64) -> None:
        self._write = write
        self._name = name
        self._max_size = max_size
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def __call__(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._writer is None:
            # A context of its own: the writer serves every caller, so it must not inherit the first
            # one's context variables (PostgreSQL's claim transaction is one).
            self._writer = asyncio.get_running_loop().create_task(
                self._write_all(), name=f"batched {self._name}", context=contextvars.Context()
            )
            keep(self._writer)
        return await future

    async def _write_all(self) -> None:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        try:
            while self._waiting:
                taken, self._waiting = self._waiting[: self._max_size], self._waiting[self._max_size :]
                batch = [(item, future) for item, future in taken if not future.done()]
                if batch:
                    await self._write_batch(batch)
                batch = []
        finally:
            self._writer = None
            for _, future in [*batch, *self._waiting]:  # stopped (shutdown): nobody may wait forever
                future.cancel()
            self._waiting = []

    async def _write_batch(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._write([item for item, _ in batch])
        except Exception as error:
            if len(batch) == 1:
                _settle(batch[0][1], error=error)
                return
            log.debug("a batch of %d %s failed (%s): writing each alone", len(batch), self._name, error)
            for one in batch:
                await self._write_batch([one])
            return
        if len(results) != len(batch):
            mismatch = RuntimeError(f"{self._name}: {len(results)} results for {len(batch)} items")
            for _, future in batch:
                _settle(future, error=mismatch)
            return
        for (_, future), result in zip(batch, results, strict=True):
            _settle(future, result=result)


def _settle(future: asyncio.Future[R], *, result: R | None = None, error: BaseException | None = None) -> None:
    if future.done():  # its caller gave up; the write happened regardless
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)  # type: ignore[arg-type]


def distinct_runs(items: Sequence[T], *, key: Callable[[T], object]) -> list[list[T]]:
    """`items` cut, in order, into runs in which no `key` repeats: one statement may touch a row only
    once (a member's round, a job's move), so a second touch goes in the next statement."""
    runs: list[list[T]] = []
    seen: set[object] = set()
    for item in items:
        if not runs or key(item) in seen:
            runs.append([])
            seen = set()
        runs[-1].append(item)
        seen.add(key(item))
    return runs
