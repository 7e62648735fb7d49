"""Deferred work waits while commands are being answered (`bot.jobs.foreground`), but not forever."""

from __future__ import annotations

import asyncio
import time

from bot.jobs.foreground import Foreground


async def test_quiet_returns_at_once_when_nothing_is_being_answered():
    began = time.monotonic()
    await Foreground(max_wait=5.0).quiet()
    assert time.monotonic() - began < 0.05


async def test_quiet_waits_until_the_last_answer_is_out():
    foreground = Foreground(max_wait=5.0)
    released = asyncio.Event()

    async def answer() -> None:
        with foreground.answer():
            await released.wait()

    answers = [asyncio.create_task(answer()) for _ in range(3)]
    await asyncio.sleep(0)
    waiter = asyncio.create_task(foreground.quiet())
    await asyncio.sleep(0.05)
    assert foreground.answering == 3 and not waiter.done()
    released.set()
    async with asyncio.timeout(1):
        await waiter
    await asyncio.gather(*answers)
    assert foreground.answering == 0


async def test_a_stream_of_answers_holds_deferred_work_for_max_wait_at_most():
    foreground = Foreground(max_wait=0.3)
    with foreground.answer():
        began = time.monotonic()
        await foreground.quiet()
        waited = time.monotonic() - began
    assert 0.29 <= waited < 0.6


async def test_an_answer_that_fails_still_counts_as_done():
    foreground = Foreground(max_wait=5.0)
    try:
        with foreground.answer():
            raise RuntimeError("the callback failed")
    except RuntimeError:
        pass
    assert foreground.answering == 0
    async with asyncio.timeout(0.1):
        await foreground.quiet()


async def test_cosmetic_work_also_waits_for_deliveries_but_claims_do_not():
    foreground = Foreground(max_wait=5.0)
    done = asyncio.Event()

    async def deliver() -> None:
        with foreground.deliver():
            await done.wait()

    delivery = asyncio.create_task(deliver())
    await asyncio.sleep(0)
    async with asyncio.timeout(0.1):
        await foreground.quiet()  # claims: only answers hold them
    edit = asyncio.create_task(foreground.quiet(deliveries=True))
    await asyncio.sleep(0.05)
    assert foreground.delivering == 1 and not edit.done()
    done.set()
    async with asyncio.timeout(1):
        await edit
    await delivery
