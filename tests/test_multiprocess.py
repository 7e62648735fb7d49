"""Three `python -m bot` processes on one PostgreSQL database, against the fakes.

Each process runs one shard of three (the fake Discord routes a guild's events to shard
`(guild_id >> 22) % 3`, as Discord does), so members in different guilds talk to different
processes, while every process claims from the one line in the database. The tests check, from
what the fake WaveSpeed and the fake Discord received and from the database, that the processes
share one fair line and one cap, that a process killed mid-run is taken over within a lease, that
a rolling restart loses nothing, and that a 429 seen by one process pauses them all.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import functools
import itertools
import json
import re
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg
import pytest

from tests.botprocess import NO_LIMITS, BotCluster, fake_env
from tests.fakes.discord import FakeDiscord
from tests.fakes.recorder import Recorded
from tests.fakes.wavespeed import FakeWaveSpeed, Scenario
from tests.helpers import FINAL_TITLES, embeds_text, messages_with_images, wait_until

# Skipped with one line when the PostgreSQL server is unreachable (failed under REQUIRE_POSTGRES=1).
pytestmark = [pytest.mark.usefixtures("postgres_url"), pytest.mark.multiprocess]

Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record]"

SHARDS = 3
LEASE_SECONDS = 3.0
LEASE_TICK = max(0.2, LEASE_SECONDS / 3)  # how often a process renews its leases and adopts orphans
CLAIM_TICK = 1.0  # how often a process looks at the line without a wake-up (bot.jobs.dispatcher.TICK)
POLL_INTERVAL = 0.25  # POLL_INTERVAL_SECONDS (the schedule's floor)
SLACK = 0.5  # a request, a database round trip and a busy two-core machine
RESULT = "✨ Imagined"
FIRST_USER_ID = 1310000000000001000
PROMPT = re.compile(r"member (\d+) job (\d+)")
POSITION = re.compile(r"#(\d+) in line")
LIVE_POSITIONS = 20  # bot.jobs.progress: further back reads "more than 20 requests ahead"
# A position edit shows what a read of the line found at most this long before the edit reached
# Discord (one progress interval, 0.5 s here, plus the request), with room for a loaded machine.
READ_LAG = 2.0


# -- the cluster and the database ------------------------------------------------------------------


@pytest.fixture
async def cluster(
    tmp_path, postgres_url: str, discord_fake: FakeDiscord, wavespeed: FakeWaveSpeed
) -> AsyncIterator[BotCluster]:
    env = fake_env(
        discord_fake,
        wavespeed,
        DATABASE_URL=postgres_url,
        LEASE_SECONDS=f"{LEASE_SECONDS:g}",
        POLL_INTERVAL_SECONDS=f"{POLL_INTERVAL:g}",
        FIRST_POLL_SECONDS="0.3",
        PROGRESS_INTERVAL_SECONDS="0.5",
        JOB_TIMEOUT_SECONDS="60",
        LOG_LEVEL="DEBUG",
        fast=True,
        **NO_LIMITS,  # members here ask for ten images each in a burst: no cost limit is under test
    )
    bots = BotCluster(discord_fake, env, tmp_path, count=SHARDS)
    yield bots
    await bots.cleanup()


@pytest.fixture
async def db(postgres_url: str) -> AsyncIterator[Connection]:
    """The test's own connection to the processes' database, for ownership and state."""
    connection: Connection = await asyncpg.connect(postgres_url)
    yield connection
    await connection.close()


async def db_until(check: Callable[[], Awaitable[bool]], *, timeout: float, what: str) -> None:
    """Ask the database until `check` holds or the deadline passes."""
    try:
        async with asyncio.timeout(timeout):
            while not await check():  # noqa: ASYNC110 - the writers are other processes
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}") from None


async def settle(condition: Callable[[], bool], *, timeout: float, what: Callable[[], str]) -> None:
    """`wait_until`, failing with a description of what was seen instead of a bare TimeoutError."""
    try:
        await wait_until(condition, timeout=timeout)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout:g} s: {what()}") from None


def pid_of(owner: str | None) -> int | None:
    """The process in an owner id (`host:pid:random`, bot.storage.base.new_owner_id)."""
    return int(owner.split(":")[-2]) if owner else None


async def owners(db: Connection) -> dict[int, list[tuple[int, str]]]:
    """Unfinished jobs by owning process (pid): [(job id, state)]."""
    found: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for row in await db.fetch("SELECT id, owner, state FROM jobs WHERE owner IS NOT NULL ORDER BY id"):
        pid = pid_of(row["owner"])
        if pid is not None:
            found[pid].append((int(row["id"]), str(row["state"])))
    return found


async def states(db: Connection) -> Counter[str]:
    return Counter(str(row["state"]) for row in await db.fetch("SELECT state FROM jobs"))


# -- members, interactions and what the fakes saw --------------------------------------------------


def guild_on(shard: int, n: int = 0) -> int:
    """A guild whose events Discord sends to `shard` of SHARDS."""
    return (SHARDS * (100 + n) + shard) << 22


@dataclass(frozen=True)
class Member:
    index: int

    @property
    def user_id(self) -> int:
        return FIRST_USER_ID + self.index

    @property
    def shard(self) -> int:
        return self.index % SHARDS

    @property
    def guild_id(self) -> int:  # two guilds per shard
        return guild_on(self.shard, (self.index // SHARDS) % 2)


@dataclass(frozen=True)
class Sent:
    """One /imagine a member sent."""

    member: int
    job: int
    payload: dict[str, Any]

    @property
    def token(self) -> str:
        return str(self.payload["token"])

    @property
    def prompt(self) -> str:
        return f"member {self.member:02d} job {self.job:02d}"


def parse_prompt(prompt: str) -> tuple[int, int]:
    found = PROMPT.fullmatch(prompt)
    assert found is not None, prompt
    return int(found[1]), int(found[2])


async def send(fake: FakeDiscord, member: Member, job: int) -> Sent:
    """Dispatch one /imagine. While a process restarts, the fake may still pick its closing
    session for a moment ("the identified gateway session is gone"): then it is sent again."""
    prompt = Sent(member.index, job, {}).prompt
    payload = fake.interaction("imagine", {"prompt": prompt}, user_id=member.user_id, guild_id=member.guild_id)
    for _ in range(40):
        try:
            await fake.dispatch_interaction(payload)
            return Sent(member.index, job, payload)
        except AssertionError as error:
            if "gone" not in str(error):
                raise
            await asyncio.sleep(0.05)
    raise AssertionError(f"no gateway session took {prompt!r} for 2 s")


def token_of(request: Recorded) -> str | None:
    """The interaction token in a callback or webhook path."""
    parts = request.path.strip("/").split("/")
    if len(parts) >= 3 and parts[0] in ("interactions", "webhooks"):
        return parts[2]
    return None


def callbacks(fake: FakeDiscord) -> dict[str, Recorded]:
    """The first answer to each interaction, by token."""
    found: dict[str, Recorded] = {}
    for request in fake.requests:
        if request.method == "POST" and request.path.endswith("/callback"):
            token = token_of(request)
            if token is not None:
                found.setdefault(token, request)
    return found


def is_placeholder(callback: Recorded) -> bool:
    data = (callback.json or {}).get("data") or {}
    return callback.status < 300 and not int(data.get("flags") or 0) & 64 and "Imagining" in embeds_text(callback)


def is_restart_refusal(callback: Recorded) -> bool:
    data = (callback.json or {}).get("data") or {}
    return callback.status < 300 and bool(int(data.get("flags") or 0) & 64) and "restarting" in embeds_text(callback)


def edits(fake: FakeDiscord) -> dict[str, list[Recorded]]:
    """Every accepted edit of each interaction's placeholder, in order, by token."""
    found: dict[str, list[Recorded]] = defaultdict(list)
    for request in fake.requests:
        if request.method == "PATCH" and request.status < 300 and request.path.startswith("/webhooks/"):
            token = token_of(request)
            if token is not None:
                found[token].append(request)
    return found


def is_final(request: Recorded) -> bool:
    return any(e.get("title", "") in FINAL_TITLES for e in (request.json or {}).get("embeds") or [])


def final_edits(fake: FakeDiscord) -> dict[str, list[Recorded]]:
    return {token: finals for token, all_ in edits(fake).items() if (finals := [r for r in all_ if is_final(r)])}


def title(request: Recorded | dict[str, Any] | None) -> str:
    body = (request.json or {}) if isinstance(request, Recorded) else (request or {})
    return str(((body.get("embeds") or [{}])[0]).get("title", ""))


def position(text: str) -> int | None:
    """The place in line a placeholder shows (21 for "more than 20 requests ahead"), or None."""
    if "WaveSpeed asked us to slow down" in text:
        return None
    if "next in line" in text:
        return 1
    if f"more than {LIVE_POSITIONS} requests ahead" in text:
        return LIVE_POSITIONS + 1
    found = POSITION.search(text)
    return int(found[1]) if found else None


def shown_position(fake: FakeDiscord, token: str) -> int | None:
    message = fake.original(token)
    return position(embeds_text(message)) if message is not None else None


def is_queued_status(request: Recorded) -> bool:
    return "**Queued**" in embeds_text(request)


def claims_in(log: str) -> list[int]:
    return [int(job) for job in re.findall(r"job (\d+) claimed", log)]


async def send_and_answer(fake: FakeDiscord, batch: Iterable[tuple[Member, int]]) -> list[Sent]:
    """Dispatch a batch and wait until each interaction was answered (Discord's 3-second window
    is per interaction: a paced burst keeps every process inside it on a two-core machine)."""
    sent = [await send(fake, member, job) for member, job in batch]
    tokens = {s.token for s in sent}
    await fake.requests.wait_for(
        lambda r: r.method == "POST" and r.path.endswith("/callback") and token_of(r) in tokens,
        count=len(tokens),
        timeout=15,
    )
    return sent


class Findings:
    """The checks of one long run, all made before the test fails, so one run shows every property
    that does not hold (a scenario of a minute should not stop at its first surprise)."""

    def __init__(self) -> None:
        self.failed: list[str] = []

    def check(self, ok: bool, message: str) -> None:
        if not ok:
            self.failed.append(message)

    def done(self) -> None:
        if self.failed:  # raised, not asserted: pytest would print the list's repr again
            raise AssertionError(f"{len(self.failed)} check(s) failed:\n- " + "\n- ".join(self.failed))


def delivered_once(
    fake: FakeDiscord, submits: list[Recorded], sent: list[Sent], *, may_repeat: Iterable[str] = ()
) -> Findings:
    """Every job was submitted once (one accepted submit per prompt, no other submit) and ended
    with one result edit of its placeholder (two only for `may_repeat`, jobs caught mid-delivery:
    the edit is repeated, the message stays one), and nothing edited a placeholder after its result."""
    found = Findings()
    prompts = Counter(r.json["prompt"] for r in submits)
    accepted = Counter(r.json["prompt"] for r in submits if r.status == 200)
    expected = Counter(s.prompt for s in sent)
    found.check(accepted == expected, f"accepted submits differ: {(accepted - expected) + (expected - accepted)}")
    found.check(prompts == expected, f"submitted more than once: {sorted((prompts - expected).elements())}")
    repeatable = set(may_repeat)
    finals, all_edits = final_edits(fake), edits(fake)
    unfinished, repeated, failed, late = [], [], [], []
    for s in sent:
        ends = finals.get(s.token, [])
        if not ends:
            unfinished.append(s.prompt)
            continue
        if len(ends) > (2 if s.token in repeatable else 1):
            repeated.append((s.prompt, len(ends)))
        if not all(title(e) == RESULT and e.files for e in ends):
            failed.append((s.prompt, [title(e) for e in ends]))
        after = [embeds_text(e)[-60:] for e in all_edits[s.token] if e.at > ends[-1].at]
        if after or title(fake.original(s.token)) != RESULT:
            late.append((s.prompt, after))
    found.check(not unfinished, f"jobs that never finished: {unfinished[:10]}")
    found.check(not repeated, f"jobs with more than one result edit (prompt, edits): {repeated[:10]}")
    found.check(not failed, f"jobs that ended without their images: {failed[:10]}")
    found.check(not late, f"placeholders edited after their result (prompt, edits): {late[:10]}")
    images = len(messages_with_images(fake))
    found.check(images == len(sent), f"{images} messages carry images for {len(sent)} jobs")
    return found


def check_delivered_once(
    fake: FakeDiscord, wavespeed: FakeWaveSpeed, sent: list[Sent], *, may_repeat: Iterable[str] = ()
) -> None:
    """`delivered_once` over every submit the fake WaveSpeed received."""
    delivered_once(fake, wavespeed.submits(), sent, may_repeat=may_repeat).done()


def report(name: str, **figures: object) -> None:
    """Measured figures, printed for `pytest -s` (and kept in the captured output on failure)."""
    print(f"\n[{name}] " + ", ".join(f"{k}={v}" for k, v in figures.items()))


# -- 1. 300 jobs, 30 members, one cap ----------------------------------------------------------------


async def test_300_jobs_from_30_members_share_one_fair_line_and_one_cap(cluster, discord_fake, wavespeed, db):
    """Thirty members send ten jobs each, member after member: the order first-come-first-served
    would run them in. While the first six predictions are held open on the fake WaveSpeed, every
    job joins the line (and every placeholder shows its place); then the line drains, six at a
    time, across three processes."""
    members = [Member(m) for m in range(30)]
    gate = Scenario(inference_seconds=3600.0)  # the first predictions run until released
    wavespeed.scenario = gate
    cluster.configure(MAX_CONCURRENT_JOBS="6")
    await cluster.start()
    started = time.monotonic()
    found = Findings()

    sent: list[Sent] = []
    for member in members:
        sent += await send_and_answer(discord_fake, [(member, job) for job in range(10)])
    answers = callbacks(discord_fake)
    assert all(is_placeholder(answers[s.token]) for s in sent), "an /imagine was not answered with a placeholder"
    dispatched = time.monotonic()
    await wavespeed.requests.wait_for(lambda r: r.method == "POST" and r.status == 200, count=6, timeout=10)

    async def all_in_line() -> bool:
        return int(await db.fetchval("SELECT COUNT(*) FROM jobs WHERE message_id IS NOT NULL")) == len(sent)

    await db_until(all_in_line, timeout=10, what="every job's placeholder recorded")
    # The line is still now: every placeholder shows its exact place in it, all processes' jobs counted.
    line = [
        str(row["interaction_token"])
        for row in await db.fetch(
            "SELECT interaction_token FROM jobs WHERE state = 'queued' AND message_id IS NOT NULL "
            "ORDER BY queue_tag, id"
        )
    ]
    assert len(line) == len(sent) - 6 and len(wavespeed.submits()) == 6
    expected = {token: min(n, LIVE_POSITIONS + 1) for n, token in enumerate(line, start=1)}

    def wrong() -> list[tuple[str, int, int | None]]:
        shown = {t: shown_position(discord_fake, t) for t in expected}
        return [(t, n, shown[t]) for t, n in expected.items() if shown[t] != n]

    with contextlib.suppress(TimeoutError):  # a read of the line a second, an edit per 0.5 s
        await wait_until(lambda: not wrong(), timeout=5)
    misplaced = wrong()
    never_shown = [t for t, _, _ in misplaced if all(position(embeds_text(e)) is None for e in edits(discord_fake)[t])]
    found.check(
        not misplaced,
        f"{len(misplaced)} of {len(expected)} placeholders do not show their place in the still line "
        f"(expected, shown): {[(n, shown) for _, n, shown in misplaced[:12]]}; "
        f"{len(never_shown)} of them were never edited with a place at all",
    )

    released = time.monotonic()
    wavespeed.scenario = Scenario(inference_range=(0.3, 0.8))
    gate.inference_seconds = 0.0  # the held predictions are done at their next poll

    await settle(
        lambda: len(final_edits(discord_fake)) >= len(sent),
        timeout=120,
        what=lambda: f"{len(final_edits(discord_fake))} of {len(sent)} jobs finished",
    )
    finished = time.monotonic()
    await db_until(lambda: _all_delivered(db, len(sent)), timeout=10, what="every job written down as delivered")

    # One cap across processes: never more than six predictions in flight, and six were.
    in_flight = wavespeed.max_in_flight()
    found.check(in_flight == 6, f"max in flight {in_flight}")
    found.failed += delivered_once(discord_fake, wavespeed.submits(), sent).failed

    # Every process claimed some of the jobs (from the one line).
    claimed = [len(claims_in(log)) for log in cluster.logs()]
    found.check(all(claimed) and sum(claimed) == len(sent), f"claims per process: {claimed}")

    # Members took turns: after the six held jobs, the next thirty submits are (nearly) thirty
    # members, and no member's first job waited behind anyone's tenth.
    order = [parse_prompt(s.json["prompt"]) for s in wavespeed.accepted_submits()]
    after_hold = [member for member, _ in order[6:36]]
    first_30 = {member for member, _ in order[:30]}
    found.check(
        len(set(after_hold)) >= 25,
        f"the 30 submits after the hold came from {len(set(after_hold))} members: {after_hold}",
    )
    # (The six held jobs were claimed the moment they were placed, before anyone else was in line.)
    # A member's ten commands are sent at once, so "first" is the order the bot wrote them down in
    # (job ids), not the number in the prompt.
    rank: dict[tuple[int, int], int] = {}
    per_member: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for row in await db.fetch("SELECT id, params FROM jobs"):
        member_index, job = parse_prompt(json.loads(row["params"])["prompt"])
        per_member[member_index].append((int(row["id"]), job))
    for member_index, jobs in per_member.items():
        for nth, (_, job) in enumerate(sorted(jobs)):
            rank[(member_index, job)] = nth
    index = {(member, rank[(member, job)]): n for n, (member, job) in enumerate(order) if n >= 6}
    last_first = max((index[(m.index, 0)] for m in members if (m.index, 0) in index), default=-1)
    first_tenth = min(index[(m.index, 9)] for m in members if (m.index, 9) in index)
    found.check(last_first < first_tenth, f"a first job (submit #{last_first}) waited behind a tenth (#{first_tenth})")
    # Each member's jobs are one round apart in the line (bot.storage.base.create_job).
    tags: dict[int, list[float]] = defaultdict(list)
    for row in await db.fetch("SELECT user_id, queue_tag FROM jobs ORDER BY id"):
        tags[int(row["user_id"]) - FIRST_USER_ID].append(float(row["queue_tag"]))
    shared = {member: t for member, t in tags.items() if len(set(t)) != len(t)}
    found.check(
        not shared,
        f"{len(shared)} of 30 members have jobs sharing a round (member: tags in creation order): "
        f"{dict(list(shared.items())[:4])}",
    )

    # Positions: never more than the jobs in line when they were read; once the line only drains,
    # never going up; never "Queued" again after the job started.
    placed_at = sorted(answers[s.token].at for s in sent)
    submit_at = [s.at for s in wavespeed.accepted_submits()]
    all_edits = edits(discord_fake)
    too_far, went_up, stale = [], [], []
    for s in sent:
        shown = [(e, position(embeds_text(e))) for e in all_edits[s.token]]
        for edit, n in shown:
            if n is not None and n <= LIVE_POSITIONS:
                in_line = bisect.bisect(placed_at, edit.at) - bisect.bisect(submit_at, edit.at - READ_LAG)
                if n > in_line:
                    too_far.append((s.prompt, n, in_line))
        draining = [n for edit, n in shown if n is not None and edit.at > released]
        start = expected.get(s.token)
        sequence = ([start] if start is not None else []) + draining
        if any(later > earlier for earlier, later in itertools.pairwise(sequence)):
            went_up.append((s.prompt, sequence))
        started_at = next((e.at for e in all_edits[s.token] if not is_queued_status(e)), None)
        if started_at is not None and any(is_queued_status(e) and e.at > started_at for e in all_edits[s.token]):
            stale.append(s.prompt)
    shown_places = sum(1 for s in sent for e in all_edits[s.token] if position(embeds_text(e)) is not None)
    found.check(not too_far, f"positions beyond the line's length (prompt, shown, jobs in line): {too_far[:10]}")
    found.check(not went_up, f"positions that went up while the line drained: {went_up[:10]}")
    found.check(not stale, f"{len(stale)} placeholders went back to 'Queued' after their job started: {stale[:10]}")

    report(
        "300 jobs",
        run_seconds=round(finished - started, 1),
        dispatch_seconds=round(dispatched - started, 1),
        drain_seconds=round(finished - released, 1),
        max_in_flight=in_flight,
        claims_per_process=claimed,
        members_in_30_after_hold=len(set(after_hold)),
        members_in_first_30=len(first_30),
        last_first_job_submit=last_first,
        first_tenth_job_submit=first_tenth,
        position_edits=shown_places,
        misplaced=len(misplaced),
        members_sharing_rounds=len(shared),
    )
    found.done()


async def _all_delivered(db: Connection, count: int) -> bool:
    return (await states(db)) == Counter({"delivered": count})


# -- 2. SIGKILL one process mid-run -----------------------------------------------------------------


async def test_a_killed_process_s_jobs_are_taken_over_within_a_lease(cluster, discord_fake, wavespeed, db):
    """The processes run for a while (each delivers a few jobs), then one is killed with jobs
    running and queued on every process; the others take its jobs over when its leases run out."""
    members = [Member(m) for m in range(12)]  # four on each shard
    wavespeed.scenario = Scenario(inference_range=(1.5, 2.5))
    cluster.configure(MAX_CONCURRENT_JOBS="6")
    await cluster.start()
    pids = [cluster.pid(shard) for shard in range(SHARDS)]
    victim = 1

    sent: list[Sent] = []
    for job in range(5):
        sent += await send_and_answer(discord_fake, [(member, job) for member in members])

    async def busy_everywhere() -> bool:
        held = await owners(db)
        warm = all(len(re.findall(r"job \d+ delivered", log)) >= 5 for log in cluster.logs())
        return warm and all(
            any(state == "submitted" for _, state in held.get(pid, []))
            and any(state == "queued" for _, state in held.get(pid, []))
            for pid in pids
        )

    await db_until(busy_everywhere, timeout=30, what="jobs queued and running on every process")
    killed_at, killed_wall = time.monotonic(), time.time()
    await cluster.bots[victim].kill()
    orphans = (await owners(db)).get(pids[victim], [])  # frozen: its owner is dead
    prediction_of = {
        int(row["id"]): str(row["prediction_id"])
        for row in await db.fetch("SELECT id, prediction_id FROM jobs WHERE prediction_id IS NOT NULL")
    }
    running = {job for job, state in orphans if state != "queued"}
    assert running, f"the killed process ran nothing: {orphans}"
    by_interaction = {int(s.payload["id"]): s for s in sent}
    token_by_job = {
        int(row["id"]): by_interaction[int(row["interaction_id"])].token
        for row in await db.fetch("SELECT id, interaction_id FROM jobs")
    }
    orphan_tokens = {token_by_job[job] for job, _ in orphans}
    mid_submit = {job for job, state in orphans if state == "submitting"}
    mid_delivery = {token_by_job[job] for job, state in orphans if state == "delivering"}

    await settle(
        lambda: len(final_edits(discord_fake)) >= len(sent),
        timeout=90,
        what=lambda: f"{len(final_edits(discord_fake))} of {len(sent)} jobs finished",
    )
    await db_until(lambda: _all_finished(db), timeout=10, what="no job left unfinished")

    found = Findings()
    # Each orphan was adopted at most once (a running one exactly once), by a survivor.
    survivors = [log for shard, log in enumerate(cluster.logs()) if shard != victim]
    adopted_at = {
        int(job): logged_at(stamp) - killed_wall + killed_at  # on the test's clock
        for log in survivors
        for stamp, job in re.findall(r"^(\S+ \S+) INFO +bot\.jobs\.dispatcher: adopting job (\d+) ", log, re.M)
    }
    adoptions = Counter(int(job) for log in survivors for job in re.findall(r"adopting job (\d+) ", log))
    assert all(adoptions[job] == 1 for job in running), f"adoptions: {adoptions}, running orphans: {running}"
    assert all(n == 1 for n in adoptions.values()), f"adopted more than once: {adoptions}"

    # A job caught between its claim and WaveSpeed's answer may have been billed: it is answered
    # as unconfirmed and never sent again (bot.jobs.runner). Every other job is delivered once.
    gambles = [s for s in sent if s.token in {token_by_job[job] for job in mid_submit}]
    for s in gambles:
        assert len([r for r in wavespeed.submits() if r.json["prompt"] == s.prompt]) <= 1
        assert [title(e) for e in final_edits(discord_fake)[s.token]] == ["Couldn't make your image"]
    delivered = [s for s in sent if s not in gambles]
    others = [r for r in wavespeed.submits() if r.json["prompt"] not in {g.prompt for g in gambles}]
    found.failed += delivered_once(discord_fake, others, delivered, may_repeat=mid_delivery).failed
    finished = await states(db)
    found.check(
        finished == Counter({"delivered": len(delivered), "unconfirmed": len(gambles)}) - Counter(),
        f"job states at the end: {dict(finished)}",
    )
    in_flight = wavespeed.max_in_flight()
    found.check(in_flight <= 6, f"max in flight {in_flight}")

    # The takeover: the kill to the first delivery of a job the dead process was running. Its
    # leases run out at most LEASE_SECONDS after the kill, a survivor looks every LEASE_TICK, and
    # then the result is one or two polls away.
    finals = final_edits(discord_fake)
    taken_over = min(finals[token_by_job[job]][0].at for job in running) - killed_at
    first_orphan = min(finals[token][0].at for token in orphan_tokens) - killed_at
    adopt = {job: round(adopted_at[job] - killed_at, 2) for job in running}
    first_poll = {
        job: round(
            min(r.at for r in wavespeed.result_polls(prediction_of[job]) if r.at > killed_at) - adopted_at[job], 2
        )
        for job in running
        if job in prediction_of  # (not one caught mid-submit: that one is never polled)
    }
    found.check(
        all(seconds <= LEASE_SECONDS + LEASE_TICK + SLACK for seconds in adopt.values()),
        f"running orphans adopted after (job: seconds) {adopt}",
    )
    found.check(
        all(seconds <= 2 * POLL_INTERVAL + SLACK for seconds in first_poll.values()),
        f"adopted jobs first polled their result after (job: seconds) {first_poll}, not within a poll or two "
        f"({POLL_INTERVAL:g} s each)",
    )
    found.check(
        taken_over <= LEASE_SECONDS + LEASE_TICK + 2 * POLL_INTERVAL + SLACK,
        f"the takeover took {taken_over:.2f} s",
    )
    report(
        "SIGKILL",
        takeover_seconds=round(taken_over, 2),
        adopted_after_seconds=adopt,
        first_poll_after_adoption_seconds=first_poll,
        first_orphan_delivery_seconds=round(first_orphan, 2),
        orphans_running=len(running),
        orphans_queued=len(orphans) - len(running),
        orphan_states=dict(Counter(state for _, state in orphans)),
        orphans_adopted=len(adoptions),
        caught_mid_submit=len(gambles),
        max_in_flight=in_flight,
    )
    found.done()


def logged_at(stamp: str) -> float:
    """A log line's time (`2026-01-31 12:00:00,123`, local time) as unix time."""
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


async def _all_finished(db: Connection) -> bool:
    unfinished = await db.fetchval(
        "SELECT COUNT(*) FROM jobs WHERE state NOT IN ('delivered', 'failed', 'unconfirmed', 'cancelled')"
    )
    return int(unfinished) == 0


# -- 3. A rolling restart -----------------------------------------------------------------------------


async def test_a_rolling_restart_loses_and_repeats_nothing(cluster, discord_fake, wavespeed, db):
    """Members keep sending /imagine on every shard while each process in turn gets SIGTERM (with
    a job of its own just submitted), exits and starts again. Every interaction is answered: a
    job, or "restarting" from a process on its way out; every job is submitted and delivered once."""
    members = [Member(m) for m in range(12)]
    # Every prediction outlives the shutdown's grace period: what a stopping process runs is
    # paused and resumed by another one.
    wavespeed.scenario = Scenario(inference_range=(1.5, 3.0))
    cluster.configure(MAX_CONCURRENT_JOBS="6", SHUTDOWN_GRACE_SECONDS="0.5")
    await cluster.start()

    sent: list[Sent] = []
    stop = asyncio.Event()

    async def feed() -> None:
        """A steady flow of /imagine, member after member, on every shard."""
        n = 0
        while not stop.is_set():
            member = members[n % len(members)]
            sent.append(await send(discord_fake, member, n // len(members)))
            n += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.35)

    def delivered() -> int:
        return len(final_edits(discord_fake))

    async def more_delivered(count: int) -> None:
        target = delivered() + count
        await settle(lambda: delivered() >= target, timeout=30, what=lambda: f"{delivered()} delivered")

    feeder = asyncio.create_task(feed())
    restarts = []
    try:
        for shard in range(SHARDS):
            await more_delivered(5)  # jobs are flowing before each restart
            # A job submitted just now on the process to stop: it will outlive the grace period.
            fresh = functools.partial(runs_a_fresh_job, db, cluster.pid(shard))
            await db_until(fresh, timeout=30, what=f"a job just submitted by shard {shard}'s process")
            began = time.monotonic()
            assert await cluster.bots[shard].terminate() == 0
            await cluster.start_one(shard)
            restarts.append(round(time.monotonic() - began, 1))
        await more_delivered(5)
    finally:
        stop.set()
        await feeder

    await discord_fake.requests.wait_for(
        lambda r: r.path.endswith("/callback"), count=len({s.token for s in sent}), timeout=10
    )
    answers = callbacks(discord_fake)
    jobs = [s for s in sent if is_placeholder(answers[s.token])]
    refused = [s for s in sent if is_restart_refusal(answers[s.token])]
    other = [
        (s.prompt, answers[s.token].status, embeds_text(answers[s.token]))
        for s in sent
        if not is_placeholder(answers[s.token]) and not is_restart_refusal(answers[s.token])
    ]
    assert not other, f"interactions neither placed nor refused as restarting: {other}"

    await settle(
        lambda: all(s.token in final_edits(discord_fake) for s in jobs),
        timeout=60,
        what=lambda: f"{sum(s.token in final_edits(discord_fake) for s in jobs)} of {len(jobs)} jobs finished",
    )
    await db_until(lambda: _all_finished(db), timeout=10, what="no job left unfinished")
    by_interaction = {int(s.payload["id"]): s for s in jobs}
    repeated = [  # jobs that started delivering twice (stopped mid-delivery): the edit is repeated
        by_interaction[int(row["interaction_id"])].token
        for row in await db.fetch(
            "SELECT j.interaction_id FROM jobs j JOIN job_events e ON e.job_id = j.id "
            "WHERE e.to_state = 'delivering' GROUP BY j.id HAVING COUNT(*) > 1"
        )
    ]
    check_delivered_once(discord_fake, wavespeed, jobs, may_repeat=repeated)
    assert (await states(db)) == Counter({"delivered": len(jobs)})
    # What each stopping process was running was paused and taken over by another one.
    resumed = sum(len(re.findall(r"adopting job \d+ \((?!queued)", log)) for log in cluster.logs())
    paused = sum(1 for edited in edits(discord_fake).values() for e in edited if title(e) == "⏸ Paused")
    assert resumed >= SHARDS and paused >= SHARDS, f"{paused} jobs paused, {resumed} running jobs taken over"
    # Six starts of three processes synced the commands once: only shard 0's process syncs, and
    # only when they changed.
    syncs = [r for r in discord_fake.requests if r.method == "PUT" and r.path.endswith("/commands")]
    assert len(syncs) == 1, f"the commands were synced {len(syncs)} times"
    report(
        "rolling restart",
        interactions=len(sent),
        jobs=len(jobs),
        refused_restarting=len(refused),
        restart_seconds=restarts,
        paused=paused,
        running_jobs_handed_over=resumed,
        redelivered=len(repeated),
    )


async def runs_a_fresh_job(db: Connection, pid: int) -> bool:
    rows = await db.fetch(
        "SELECT owner FROM jobs WHERE state = 'submitted' AND submitted_at > extract(epoch FROM clock_timestamp()) - 0.5"
    )
    return any(pid_of(row["owner"]) == pid for row in rows)


# -- 4. One 429 pauses every process ----------------------------------------------------------------


async def test_a_429_seen_by_one_process_pauses_submits_in_all(cluster, discord_fake, wavespeed, db):
    """With jobs flowing on every process, WaveSpeed answers one submit 429 with Retry-After: 2.
    No process claims or submits for those two seconds; then all of them carry on."""
    members = [Member(m) for m in range(12)]
    wavespeed.scenario = Scenario(inference_range=(0.4, 0.8))
    cluster.configure(MAX_CONCURRENT_JOBS="6")
    await cluster.start()
    pids = [cluster.pid(shard) for shard in range(SHARDS)]

    sent: list[Sent] = []
    for job in range(5):
        sent += await send_and_answer(discord_fake, [(member, job) for member in members])

    async def queued_everywhere() -> bool:
        held = await owners(db)
        return all(any(state == "queued" for _, state in held.get(pid, [])) for pid in pids)

    # Jobs flow: every process has claimed some, and every process answered some still waiting.
    await settle(
        lambda: all(claims_in(log) for log in cluster.logs()),
        timeout=20,
        what=lambda: f"claims per process: {[len(claims_in(log)) for log in cluster.logs()]}",
    )
    await db_until(queued_everywhere, timeout=10, what="jobs queued on every process")
    wavespeed.scenario.retry_after = 2.0
    wavespeed.scenario.submit_responses.append(429)
    [limited] = await wavespeed.requests.wait_for(lambda r: r.method == "POST" and r.status == 429, timeout=20)

    await settle(
        lambda: len(final_edits(discord_fake)) >= len(sent),
        timeout=90,
        what=lambda: f"{len(final_edits(discord_fake))} of {len(sent)} jobs finished",
    )
    await db_until(lambda: _all_finished(db), timeout=10, what="no job left unfinished")

    # The pause as written in the database (its own clock): from the 429's write for Retry-After.
    paused_until = float(await db.fetchval("SELECT paused_until FROM queue_state WHERE id = 1"))
    paused_from = paused_until - 2.0
    claims = [
        (int(row["job_id"]), float(row["at"]))
        for row in await db.fetch(
            "SELECT job_id, at FROM job_events WHERE to_state = 'submitting' AND detail = 'claimed' ORDER BY id"
        )
    ]
    during = [(job, round(at - paused_from, 3)) for job, at in claims if paused_from <= at < paused_until]
    assert not during, f"claims while paused (job, seconds into the pause): {during}"

    # What WaveSpeed saw: nothing within the pause, except a submit whose claim came before the
    # pause was written (already on its way when the 429 arrived).
    claimed_at = dict(claims)
    job_of = {
        str(row["prompt"]): int(row["id"])
        for row in await db.fetch("SELECT id, params::json->>'prompt' AS prompt FROM jobs")
    }
    window = [s for s in wavespeed.submits() if limited.at < s.at < limited.at + 2.0]
    in_flight_then = [s.json["prompt"] for s in window if claimed_at[job_of[s.json["prompt"]]] < paused_from]
    assert len(window) == len(in_flight_then), f"submits during the pause: {[s.json['prompt'] for s in window]}"
    resumed = next(s for s in wavespeed.submits() if s.at > limited.at and s not in window)
    gap = resumed.at - limited.at
    assert 2.0 <= gap <= 2.0 + CLAIM_TICK + 1.0, f"submits resumed {gap:.2f} s after the 429"

    # Every process was claiming before the pause and after it: the pause held back all three.
    by_process = [[claimed_at[job] for job in claims_in(log) if job in claimed_at] for log in cluster.logs()]
    before = [sum(at < paused_from for at in ats) for ats in by_process]
    after = [sum(at >= paused_until for at in ats) for ats in by_process]
    assert all(before) and all(after), f"claims per process before the pause {before}, after it {after}"
    told = [e for edited in edits(discord_fake).values() for e in edited if "asked us to slow down" in embeds_text(e)]
    assert told, "no waiting member was told WaveSpeed asked to slow down"

    # The refused submit created nothing and was sent again once; every job was delivered once.
    assert [s.json["prompt"] for s in wavespeed.submits() if s.status != 200] == [limited.json["prompt"]]
    delivered_once(discord_fake, [s for s in wavespeed.submits() if s is not limited], sent).done()
    assert (await states(db)) == Counter({"delivered": len(sent)})
    report(
        "429",
        submits_in_window_already_sent=len(in_flight_then),
        resumed_after_seconds=round(gap, 2),
        claims_before_pause=before,
        claims_after_pause=after,
        members_told=len({token_of(e) for e in told}),
    )
