"""Group commit (`bot.storage.batch`): what callers asking at the same moment get, and how often the
database is asked."""

from __future__ import annotations

import asyncio

import pytest

from bot.storage.batch import Batcher


class Writes:
    """A write function that records each batch it was given; items equal to `bad` fail a batch."""

    def __init__(self, *, bad: int | None = None, gate: asyncio.Event | None = None) -> None:
        self.batches: list[list[int]] = []
        self.bad = bad
        self.gate = gate
        self.started = asyncio.Event()

    async def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.bad in items:
            raise ValueError(f"item {self.bad} is bad")
        return [item * 10 for item in items]


async def test_callers_in_one_turn_share_one_write_and_each_gets_its_own_result():
    writes = Writes()
    batcher = Batcher(writes, name="test")
    assert await asyncio.gather(*(batcher(n) for n in range(100))) == [n * 10 for n in range(100)]
    assert writes.batches == [list(range(64)), list(range(64, 100))]  # max_size 64, in order


async def test_a_lone_caller_is_written_at_once():
    writes = Writes()
    batcher = Batcher(writes, name="test")
    async with asyncio.timeout(1):
        assert await batcher(7) == 70
    assert writes.batches == [[7]]


async def test_callers_arriving_during_a_write_go_together_in_the_next():
    gate = asyncio.Event()
    writes = Writes(gate=gate)
    batcher = Batcher(writes, name="test")
    first = asyncio.ensure_future(batcher(1))
    await writes.started.wait()  # the first write has started and is held at the gate
    later = [asyncio.ensure_future(batcher(n)) for n in (2, 3, 4)]
    gate.set()
    assert await first == 10 and await asyncio.gather(*later) == [20, 30, 40]
    assert writes.batches == [[1], [2, 3, 4]]


async def test_a_bad_item_fails_only_its_own_caller():
    writes = Writes(bad=3)
    batcher = Batcher(writes, name="test")
    results = await asyncio.gather(*(batcher(n) for n in range(1, 6)), return_exceptions=True)
    assert results[:2] == [10, 20] and results[3:] == [40, 50]
    assert isinstance(results[2], ValueError) and "item 3" in str(results[2])
    assert writes.batches == [[1, 2, 3, 4, 5], [1], [2], [3], [4], [5]]  # the batch, then each alone


async def test_a_caller_cancelled_before_its_batch_is_left_out():
    gate = asyncio.Event()
    writes = Writes(gate=gate)
    batcher = Batcher(writes, name="test")
    first = asyncio.ensure_future(batcher(1))
    await writes.started.wait()
    gone, kept = asyncio.ensure_future(batcher(2)), asyncio.ensure_future(batcher(3))
    await asyncio.sleep(0)
    gone.cancel()
    gate.set()
    assert await first == 10 and await kept == 30
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert writes.batches == [[1], [3]]


async def test_a_wrong_number_of_results_fails_the_batch_instead_of_mixing_answers_up():
    async def short(items: list[int]) -> list[int]:
        return items[:-1]

    batcher = Batcher(short, name="test")
    results = await asyncio.gather(batcher(1), batcher(2), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
