"""The fair queue on its own: round-robin order, capacity, cancellation and back-pressure."""

from __future__ import annotations

import asyncio

import pytest

from bot.jobs.queue import FairQueue, LeftQueueError


def enqueue(queue: FairQueue, job_id: int, user: int) -> asyncio.Future[None]:
    return queue.add(job_id, user, queue.tag_for(user))


async def test_a_busy_member_does_not_delay_anothers_first_job():
    queue = FairQueue(capacity=1)
    turns = {job: enqueue(queue, job, user=1) for job in range(1, 11)}  # member 1: ten jobs
    turns[11] = enqueue(queue, 11, user=2)
    turns[12] = enqueue(queue, 12, user=3)
    assert turns[1].done()  # a free slot: the first job starts at once
    assert [w.job_id for w in queue.order()][:4] == [11, 12, 2, 3]
    assert queue.position(11) == 1 and queue.position(10) == 11

    started = []
    for _ in range(11):
        queue.release()
        started.append(next(j for j, t in turns.items() if t.done() and j not in started and j != 1))
    assert started[:3] == [11, 12, 2] and sorted(started) == list(range(2, 13))


async def test_never_more_running_than_the_capacity():
    queue = FairQueue(capacity=2)
    turns = [enqueue(queue, job, user=job % 3) for job in range(6)]
    assert sum(t.done() for t in turns) == 2 and queue.running == 2
    queue.release()
    assert sum(t.done() for t in turns) == 3 and queue.running == 2


async def test_a_removed_job_never_starts_and_its_waiter_is_told():
    queue = FairQueue(capacity=1)
    enqueue(queue, 1, user=1)
    waiting = enqueue(queue, 2, user=1)
    assert queue.remove(2) and not queue.remove(2)
    with pytest.raises(LeftQueueError):
        await waiting
    queue.release()
    assert queue.running == 0 and len(queue) == 0


async def test_a_pause_holds_every_start_until_it_ends():
    queue = FairQueue(capacity=3)
    queue.pause(0.2)
    turn = enqueue(queue, 1, user=1)
    assert not turn.done() and queue.paused
    await asyncio.wait_for(turn, 2)  # the pause ends by itself
    assert queue.running == 1


async def test_tags_restored_after_a_restart_keep_the_order():
    before = FairQueue(capacity=1)
    enqueue(before, 1, user=1)  # running
    tags = {}
    for job, user in [(2, 1), (3, 1), (4, 2)]:
        tags[job] = before.tag_for(user)
        before.add(job, user, tags[job])
    order_before = [w.job_id for w in before.order()]

    after = FairQueue(capacity=0)  # nothing may start while we look
    after.restore(list(tags.values()))
    for job, user in [(2, 1), (3, 1), (4, 2)]:
        after.add(job, user, tags[job])
    assert [w.job_id for w in after.order()] == order_before == [4, 2, 3]  # member 1 has one running
    assert after.tag_for(3) == after.virtual_time  # a newcomer joins the current round
