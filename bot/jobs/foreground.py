"""Members waiting for the bot's first answer come first.

Discord gives a command 3 seconds to be answered; nothing else the bot does has a deadline that
short. During a burst of commands the event loop has more to do than one core can: answers, but
also claims and submits of jobs already queued, position and progress edits of placeholders. Work
that can wait a moment therefore waits while commands are being answered (`quiet()`), up to
`max_wait` so that a steady stream of commands cannot starve it. Polls and deliveries of running
jobs do not wait: their members are waiting too, and they are few next to a burst.

Progress edits ("Generating", a queue position) are only cosmetic, so they also wait while results
are being delivered (`quiet(deliveries=True)`): when many predictions finish together, each edit
would delay someone's images, and most of those edits are dropped anyway once their own job is done.

Measured (tests/perf/bench.py, 3000 simultaneous /imagine on 2 cores): without this, a burst's
answers share the loop with ~1000 submits and their placeholder edits, and the last answers miss
the window, which then costs more (each expired answer is an error to handle).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

# How long deferred work waits at most for a quiet moment: a burst of 1000 commands is answered in
# well under this, and a steady stream of commands still lets queued jobs start every 2 seconds.
MAX_WAIT = 2.0


class Foreground:
    def __init__(self, *, max_wait: float = MAX_WAIT) -> None:
        self._max_wait = max_wait
        self._answering = 0
        self._delivering = 0
        self._quiet = asyncio.Event()  # no command being answered
        self._quiet.set()
        self._calm = asyncio.Event()  # nor any result being delivered
        self._calm.set()

    @property
    def answering(self) -> int:
        """Commands being admitted and answered right now."""
        return self._answering

    @property
    def delivering(self) -> int:
        """Results being fetched and posted right now."""
        return self._delivering

    def answer(self) -> contextlib.AbstractContextManager[None]:
        """Around admitting a command and posting its answer."""
        return self._counted(answering=1)

    def deliver(self) -> contextlib.AbstractContextManager[None]:
        """Around fetching a finished job's images and posting them."""
        return self._counted(delivering=1)

    @contextlib.contextmanager
    def _counted(self, *, answering: int = 0, delivering: int = 0) -> Iterator[None]:
        self._answering += answering
        self._delivering += delivering
        self._update()
        try:
            yield
        finally:
            self._answering -= answering
            self._delivering -= delivering
            self._update()

    def _update(self) -> None:
        for event, busy in ((self._quiet, self._answering), (self._calm, self._answering + self._delivering)):
            if busy:
                event.clear()
            else:
                event.set()

    async def quiet(self, *, deliveries: bool = False) -> None:
        """Return once no command is being answered (and, with `deliveries`, no result delivered),
        or after `max_wait` at most."""
        event = self._calm if deliveries else self._quiet
        if not event.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._max_wait):
                    await event.wait()
