"""How many bytes of downloaded images the bot holds at once, whatever the number of jobs.

A delivery holds its images from the download until the upload (and the moderation log's copy)
is done. Bounding the jobs (the bot once let 16 deliver at a time) bounds memory badly both ways:
16 jobs of four large PNGs is hundreds of megabytes, while 16 jobs of small JPEGs leave a peak of
finishing jobs waiting in line for no reason. So the bound is in bytes (`DELIVERY_MEMORY_MB`):

- a job asks before its download for what its images will probably weigh: its image count times
  the largest image among the last ones seen (4 MiB each before any was seen);
- once downloaded, its share becomes what the images really weigh, so a job that brought more than
  it asked for holds the next ones back until it is done;
- jobs are let in strictly in the order they asked (a four-image job is not overtaken forever by
  single images), and one job always gets in, however large, when nothing else is held.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator

MIB = 1024 * 1024
# The guess for one image before any was seen: a 1024x1024 PNG weighs 1.5-3 MB.
FIRST_GUESS = 4 * MIB
# The guess follows the largest of this many recent images.
REMEMBERED = 32


class Share:
    """One job's bytes in the budget."""

    def __init__(self, budget: ImageMemory, size: int) -> None:
        self._budget = budget
        self.size = size

    def settle(self, sizes: list[int]) -> None:
        """The images are in memory: the share becomes their real size (and the guess learns)."""
        self._budget.learn(sizes)
        self._budget._resize(self, sum(sizes))


class ImageMemory:
    def __init__(self, limit_bytes: int) -> None:
        self.limit = limit_bytes
        self.held = 0  # bytes of the shares handed out
        self._recent: collections.deque[int] = collections.deque(maxlen=REMEMBERED)
        self._line: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    def guess(self, images: int) -> int:
        per_image = max(self._recent) if self._recent else FIRST_GUESS
        return max(1, images) * per_image

    @property
    def waiting(self) -> int:
        return len(self._line)

    @contextlib.asynccontextmanager
    async def share(self, images: int) -> AsyncIterator[Share]:
        """Wait for room for `images` images, hold it for the block, then give it back."""
        share = Share(self, self.guess(images))
        await self._enter(share.size)
        try:
            yield share
        finally:
            self.held -= share.size
            self._let_in()

    def _fits(self, size: int) -> bool:
        return self.held == 0 or self.held + size <= self.limit

    async def _enter(self, size: int) -> None:
        if not self._line and self._fits(size):
            self.held += size
            return
        entry = (size, asyncio.get_running_loop().create_future())
        self._line.append(entry)
        try:
            await entry[1]
        except asyncio.CancelledError:
            if entry[1].done() and not entry[1].cancelled():  # let in just as it was cancelled
                self.held -= size
            else:  # still in line, unless `_let_in` already dropped it
                with contextlib.suppress(ValueError):
                    self._line.remove(entry)
            self._let_in()
            raise

    def _let_in(self) -> None:
        while self._line and self._fits(self._line[0][0]):
            size, future = self._line.popleft()
            if future.done():
                continue
            self.held += size
            future.set_result(None)

    def _resize(self, share: Share, size: int) -> None:
        self.held += size - share.size
        share.size = size
        self._let_in()

    def learn(self, sizes: list[int]) -> None:
        self._recent.extend(sizes)
