"""The bytes of images held at once while results are delivered (bot.jobs.memory)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from bot.config import ConfigError, load_settings
from bot.jobs.memory import FIRST_GUESS, MIB, ImageMemory


async def enter(memory: ImageMemory, images: int, log: list[str], name: str, leave: asyncio.Event) -> None:
    async with memory.share(images):
        log.append(name)
        await leave.wait()


def budget(limit: int, image: int) -> ImageMemory:
    """A budget of `limit` bytes that has seen images of `image` bytes (its guess per image)."""
    memory = ImageMemory(limit)
    memory.learn([image])
    return memory


async def cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def settled() -> None:
    """Let every task that can run, run (each step below is a handful of loop turns)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_jobs_share_the_budget_in_bytes_not_in_jobs():
    memory = budget(10 * MIB, 1 * MIB)  # images seen so far weigh 1 MiB: a job of four asks for 4 MiB
    leave = asyncio.Event()
    log: list[str] = []
    tasks = [asyncio.create_task(enter(memory, 4, log, f"job{i}", leave)) for i in range(3)]
    await settled()
    assert log == ["job0", "job1"] and memory.held == 8 * MIB and memory.waiting == 1  # a third would be 12
    leave.set()
    await asyncio.gather(*tasks)
    assert log == ["job0", "job1", "job2"] and memory.held == 0


async def test_before_any_image_was_seen_each_is_guessed_large():
    memory = ImageMemory(64 * MIB)
    assert memory.guess(4) == 4 * FIRST_GUESS
    memory.learn([300_000, 500_000])
    assert memory.guess(4) == 4 * 500_000  # the largest recent image


async def test_a_share_becomes_what_the_images_weigh_and_lets_the_line_move():
    memory = budget(8 * MIB, 4 * MIB)
    log: list[str] = []
    leave = asyncio.Event()
    first = asyncio.Event()

    async def lighter() -> None:
        async with memory.share(2) as share:  # asks for 8 MiB: all of it
            first.set()
            share.settle([200_000, 300_000])  # brought half a megabyte
            await leave.wait()

    holder = asyncio.create_task(lighter())
    await first.wait()
    waiter = asyncio.create_task(enter(memory, 1, log, "next", leave))
    await settled()
    assert log == ["next"]  # the settled share left room: 0.5 MiB + 4 MiB (the guess is still the largest seen)
    leave.set()
    await asyncio.gather(holder, waiter)
    assert memory.held == 0


async def test_a_share_heavier_than_asked_holds_the_next_ones_back():
    memory = budget(8 * MIB, 1 * MIB)
    log: list[str] = []
    leave, settled_heavy = asyncio.Event(), asyncio.Event()

    async def heavy() -> None:
        async with memory.share(1) as share:
            share.settle([7 * MIB + 1])
            settled_heavy.set()
            await leave.wait()

    holder = asyncio.create_task(heavy())
    await settled_heavy.wait()
    waiter = asyncio.create_task(enter(memory, 1, log, "next", leave))  # guessed at 7 MiB + 1 now
    await settled()
    assert log == [] and memory.waiting == 1
    leave.set()
    await asyncio.gather(holder, waiter)
    assert log == ["next"] and memory.held == 0


async def test_the_line_is_first_come_first_served():
    memory = budget(4 * MIB, 1 * MIB)
    log: list[str] = []
    leave = asyncio.Event()
    big_holder = asyncio.create_task(enter(memory, 3, log, "holder", leave))
    await settled()
    four = asyncio.create_task(enter(memory, 4, log, "four", leave))  # waits for all 4 MiB
    await settled()
    one = asyncio.create_task(enter(memory, 1, log, "one", leave))  # 1 MiB is free, but "four" came first
    await settled()
    assert log == ["holder"] and memory.waiting == 2
    leave.set()
    await asyncio.gather(big_holder, four, one)
    assert log == ["holder", "four", "one"]


async def test_one_job_always_gets_in_however_large():
    memory = ImageMemory(8 * MIB)
    async with memory.share(4) as share:  # 16 MiB guessed, more than the whole budget
        share.settle([20 * MIB])
        assert memory.held == 20 * MIB
    assert memory.held == 0


async def test_a_job_cancelled_while_waiting_leaves_no_trace():
    memory = budget(2 * MIB, 2 * MIB)
    log: list[str] = []
    leave = asyncio.Event()
    holder = asyncio.create_task(enter(memory, 1, log, "holder", leave))
    await settled()
    cancelled = asyncio.create_task(enter(memory, 1, log, "cancelled", leave))
    after = asyncio.create_task(enter(memory, 1, log, "after", leave))
    await settled()
    await cancel(cancelled)
    assert memory.waiting == 1
    leave.set()
    await asyncio.gather(holder, after)
    assert log == ["holder", "after"] and memory.held == 0 and memory.waiting == 0


async def test_a_job_cancelled_just_as_it_was_let_in_gives_its_room_back():
    memory = budget(2 * MIB, 2 * MIB)
    log: list[str] = []
    leave = asyncio.Event()
    holder = asyncio.create_task(enter(memory, 1, log, "holder", leave))
    await settled()
    late = asyncio.create_task(enter(memory, 1, log, "late", leave))
    await settled()
    leave.set()
    await holder  # its exit let "late" in, which has not run yet
    await cancel(late)
    assert memory.held == 0 and memory.waiting == 0


@pytest.mark.parametrize("images", [1, 4])
async def test_the_guess_counts_every_image(images):
    memory = budget(64 * MIB, MIB)
    async with memory.share(images):
        assert memory.held == images * MIB


def test_the_budget_is_a_setting_in_mebibytes_with_a_floor():
    keys = {"_env_file": None, "discord_token": "d" * 24, "wavespeed_api_key": "w" * 24}
    assert load_settings(**keys).delivery_memory_mb == 64
    assert load_settings(**keys, delivery_memory_mb="256").delivery_memory_mb == 256
    with pytest.raises(ConfigError, match="DELIVERY_MEMORY_MB"):
        load_settings(**keys, delivery_memory_mb="4")  # two large PNGs: results would deliver one by one
