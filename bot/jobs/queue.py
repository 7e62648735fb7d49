"""A fair queue in front of WaveSpeed: at most `capacity` jobs in flight, round-robin between members.

Fairness is start-time fair queuing: a job's tag is `max(virtual time, the member's previous
tag + 1)`, and jobs start in (tag, id) order. A member with ten jobs waiting holds tags t..t+9, so
another member's first job (tag t) starts second, not eleventh. The tag is stored with the job,
so the order survives a restart. A 429 from WaveSpeed pauses every start until its Retry-After.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


class LeftQueueError(Exception):
    """The job was taken out of the queue (cancelled) while it waited."""


@dataclass(frozen=True)
class Waiting:
    job_id: int
    user_id: int
    tag: float


class FairQueue:
    def __init__(self, capacity: int, *, on_change: Callable[[], None] | None = None) -> None:
        self.capacity = capacity
        self.running = 0
        self.virtual_time = 0.0
        self.paused_until = 0.0  # loop time; submissions wait until then
        self._waiting: dict[int, Waiting] = {}
        self._turns: dict[int, asyncio.Future[None]] = {}
        self._last_tag: dict[int, float] = {}  # each member's latest tag, started or not
        self._on_change = on_change or (lambda: None)
        self._resume: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._waiting)

    def tag_for(self, user_id: int) -> float:
        """The tag a new job of this member gets: one round after their previous job, never before now."""
        last = self._last_tag.get(user_id)
        return self.virtual_time if last is None else max(self.virtual_time, last + 1)

    def order(self) -> list[Waiting]:
        return sorted(self._waiting.values(), key=lambda w: (w.tag, w.job_id))

    def position(self, job_id: int) -> int | None:
        """1 for the next job to start."""
        for index, waiting in enumerate(self.order(), start=1):
            if waiting.job_id == job_id:
                return index
        return None

    def add(self, job_id: int, user_id: int, tag: float) -> asyncio.Future[None]:
        """Put a job in line; the future resolves when it may submit (holding a slot)."""
        self._waiting[job_id] = Waiting(job_id, user_id, tag)
        self._last_tag[user_id] = max(tag, self._last_tag.get(user_id, tag))
        turn = self._turns[job_id] = asyncio.get_running_loop().create_future()
        self._dispatch()
        return turn

    def remove(self, job_id: int) -> bool:
        """Take a waiting job out of line. False if it is not waiting (it may already have started)."""
        if self._waiting.pop(job_id, None) is None:
            return False
        turn = self._turns.pop(job_id)
        if not turn.done():
            turn.set_exception(LeftQueueError(job_id))
            turn.exception()  # retrieved: the waiter may be gone already
        self._on_change()
        return True

    def restore(self, tags: list[float]) -> None:
        """After a restart: virtual time resumes at the earliest tag still waiting."""
        if tags:
            self.virtual_time = min(tags)

    def occupy(self) -> None:
        """A job already running on WaveSpeed (resumed after a restart) takes a slot without waiting."""
        self.running += 1

    def release(self) -> None:
        self.running = max(0, self.running - 1)
        self._dispatch()

    def pause(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        self.paused_until = max(self.paused_until, loop.time() + seconds)
        if self._resume is not None:
            self._resume.cancel()
        self._resume = loop.call_at(self.paused_until, self._dispatch)
        log.info("WaveSpeed asked to slow down: submissions paused for %.1f s", seconds)
        self._on_change()

    @property
    def paused(self) -> bool:
        return asyncio.get_running_loop().time() < self.paused_until

    def _dispatch(self) -> None:
        started = False
        while self._waiting and self.running < self.capacity and not self.paused:
            nxt = self.order()[0]
            del self._waiting[nxt.job_id]
            turn = self._turns.pop(nxt.job_id)
            if turn.done():  # its waiter was cancelled (shutdown): it takes no slot
                continue
            self.running += 1
            self.virtual_time = max(self.virtual_time, nxt.tag)
            turn.set_result(None)
            started = True
        if started or not self._waiting:
            self._on_change()
