"""Background tasks that are never lost: each is referenced until it ends and its failure logged
(a bare `asyncio.create_task` can be garbage-collected mid-flight or fail in silence)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
_running: set[asyncio.Future[Any]] = set()


def create_task(coroutine: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
    """A task kept alive until it ends, whose exception (if any) is logged with its name."""
    task = asyncio.get_running_loop().create_task(coroutine, name=name)
    keep(task)
    return task


def keep(future: asyncio.Future[T]) -> None:
    _running.add(future)
    future.add_done_callback(_finished)


def _finished(future: asyncio.Future[Any]) -> None:
    _running.discard(future)
    if not future.cancelled() and (error := future.exception()) is not None:
        name = future.get_name() if isinstance(future, asyncio.Task) else "background step"
        log.error("%s failed", name, exc_info=error)


async def finish_anyway(work: Awaitable[T], *, if_abandoned: Callable[[T], Awaitable[None]] | None = None) -> T:
    """Await `work`; if the caller is cancelled first (its time box ran out), `work` still finishes
    (a database write cannot be taken back once sent) and `if_abandoned` gets its result."""
    future = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        keep(future)
        if if_abandoned is not None:
            future.add_done_callback(lambda done: _abandoned(done, if_abandoned))
        raise


def _abandoned(done: asyncio.Future[T], if_abandoned: Callable[[T], Awaitable[None]]) -> None:
    if not done.cancelled() and done.exception() is None:
        create_task(_call(if_abandoned, done.result()), name="after an abandoned write")


async def _call(function: Callable[[T], Awaitable[None]], value: T) -> None:
    await function(value)
