"""Benchmark: the real bot process against the fake Discord and WaveSpeed, and the official
`wavespeed` SDK against the same fake WaveSpeed, in one run. Prints a table of medians and ratios.

    python -m tests.perf.bench                      # 1, 100 and 1000 concurrent jobs
    python -m tests.perf.bench --jobs 1,10 --sdk-jobs 1,10   # a quick run
    python -m tests.perf.bench --modes poll                  # only the default mode (also: push, sync)
    python -m tests.perf.bench --jobs 100,1000 --sdk-jobs 100,1000 --modes poll --runs 2   # the poll schedule
    python -m tests.perf.bench --jobs 3000 --sdk-jobs 0 --backends sqlite,postgresql,cluster

Inference times (`--distributions`, both by default, each with its own SDK rows in the same run):
`uniform`, drawn evenly from 2-8 s; `lognormal`, peaked like real generations: median 5 s and
sigma 0.2105 (of the logarithm), so 90 % fall within 3.5-7 s (sigma solves
Phi(ln(7/5) / s) - Phi(ln(3.5/5) / s) = 0.9: 4.5 % come faster than 3.5 s, 5.5 % slower than 7 s).

Backends (`--backends`, sqlite by default): `sqlite`, one process on a SQLite file, in every mode of
`--modes`; `postgresql`, one process on a fresh PostgreSQL database (TEST_POSTGRES_URL's server, see
tests/pg.py); `cluster`, `--processes` processes (SHARD_COUNT=N, SHARD_IDS=i) on one fresh database,
the interactions spread over guilds that map to every shard, and one process SIGKILLed once a third
of the jobs ended (delivered or failed) (see tests/perf/cluster.py). The PostgreSQL rows run in poll mode.

Warm-up (`--warmup`, 100): in poll mode the bot places its polls from the predictions it has seen
finish, as a bot that has been running does; a freshly started one polls on a fixed rhythm until
27 have finished. So each poll row first sends `--warmup` jobs at once, waits for them all, and
only then sends the measured ones; nothing of the warm-up is counted (0: measure a cold bot). The
SDK learns nothing and needs no warm-up.

Every figure comes from the fakes' own records, on one clock (this process's monotonic clock):
- overhead: from the moment the fake WaveSpeed marks a prediction completed to the moment the fake
  Discord receives its images (for the SDK, which runs in a process of its own, its threads polling
  every 1 s as it does by default, see tests/perf/sdk_client.py: to the moment `run()` returns);
- polls and submits per job, as the fake WaveSpeed counted them;
- peak requests/s: the most result polls (and, in brackets, all API requests: submits too) the fake
  WaveSpeed received within any 1 s, over the measured jobs;
- first response: from the fake gateway sending INTERACTION_CREATE to the fake receiving the callback;
- event-loop lag p99: measured inside each bot process (`bot.metrics`) over its life (warm-up
  included), read from that process's own log file;
- peak RSS: each bot process's VmHWM from /proc (the largest, then each);
- in flight: the most predictions the fake WaveSpeed held at one moment, against MAX_CONCURRENT_JOBS;
- takeover (cluster): from the kill (SIGSTOP, its jobs read, SIGKILL) until every job the killed
  process owned has another owner and every one it had started is delivered (its waiting jobs then
  start in their turn; their last delivery is reported beside it);
- burst: where the CPU went while the measured commands were being answered (tests/perf/cluster.py);
- the machine (tests/perf/machine.py): each row's 1-minute load average at start and end, and the
  cores kept busy by the harness (the fakes), the client measured (the bots, or the SDK's process)
  and everyone else.
With `--runs N` everything runs N times; each cell then shows the lowest and highest of the runs
(ratios are taken within a run, against that run's SDK). The machine is noisy: compare ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bot.metrics import LoopLagMonitor
from tests.botprocess import ROOT, BotProcess
from tests.fakes.discord import FakeDiscord
from tests.fakes.discord_payloads import APP_PERMISSIONS
from tests.fakes.recorder import Recorded
from tests.fakes.wavespeed import SEED, FakePrediction, FakeWaveSpeed, Scenario
from tests.perf.cluster import (
    LEASE_SECONDS,
    BurstCost,
    Deliveries,
    bot_env,
    fresh_database,
    kill_owner,
    loop_lag_p99_ms,
    max_in_flight,
    peak_rss_mb,
    shard_guilds,
)
from tests.perf.machine import peak_rate
from tests.perf.report import Figures, machine, ratios, table, targets

# Inference times: (uniform range) or (log-normal median, sigma); sigma derived in the docstring.
DISTRIBUTIONS: dict[str, Scenario] = {
    "uniform": Scenario(queue_seconds=0.0, inference_range=(2.0, 8.0), image_size=(256, 256)),
    "lognormal": Scenario(queue_seconds=0.0, inference_lognormal=(5.0, 0.2105), image_size=(256, 256)),
}
BACKENDS = ("sqlite", "postgresql", "cluster")
MODES = ("poll", "push", "sync")
WARMUP_USERS = 1320000000000001000  # the warm-up's members, apart from the measured ones


def interactions(
    discord_fake: FakeDiscord, count: int, prompt: str, users: int, guilds: list[int]
) -> list[dict[str, Any]]:
    return [
        discord_fake.interaction(
            "imagine", {"prompt": f"{prompt} {i}"}, user_id=users + i, guild_id=guilds[i % len(guilds)]
        )
        for i in range(count)
    ]


async def warm_up(discord_fake: FakeDiscord, database: str, count: int, guilds: list[int], *, cap: int) -> None:
    """`count` jobs at once, waited for to the end: the bot has seen predictions finish. They run
    `cap` at a time (MAX_CONCURRENT_JOBS), each up to 8 s plus its delivery."""
    payloads = interactions(discord_fake, count, "warm-up job", WARMUP_USERS, guilds)
    for payload in payloads:
        await discord_fake.dispatch_interaction(payload)
    warm = Deliveries(discord_fake, {int(p["id"]): p["token"] for p in payloads}, database)
    if not await warm.until(count, timeout=60 + count * 0.2 + math.ceil(count / cap) * 10):
        raise SystemExit("the warm-up did not finish")


async def bench_bot(
    jobs: int,
    workdir: Path,
    *,
    mode: str,
    distribution: str,
    run: int,
    warmup: int,
    backend: str = "sqlite",
    processes: int = 1,
    cap: int,
    guilds: list[int],
) -> Figures:
    count = processes if backend == "cluster" else 1
    label = {"sqlite": "sqlite", "postgresql": "postgresql", "cluster": f"postgresql, {count} processes"}[backend]
    figures = Figures(f"bot ({mode}, {label})", jobs, distribution, run, cap=cap)
    # Each process logs to its own bot.log in a directory of its own (run, distribution, row, process).
    rowdir = workdir / f"run{run}-{distribution}-{backend}-{mode}-{jobs}"
    discord_fake, wavespeed = FakeDiscord(), FakeWaveSpeed()
    async with contextlib.AsyncExitStack() as stack:
        await discord_fake.start()
        stack.push_async_callback(discord_fake.close)
        await wavespeed.start()
        stack.push_async_callback(wavespeed.close)
        wavespeed.scenario = DISTRIBUTIONS[distribution]
        for guild in guilds:  # the bot is in each server, and (as on Discord) has its channels cached
            discord_fake.bot_guilds.setdefault(guild, APP_PERMISSIONS)
        discord_fake.loaded_guilds = set(guilds)
        if backend == "sqlite":
            database = f"sqlite:///{rowdir / 'bench.db'}"
        else:
            database = await stack.enter_async_context(fresh_database())
        bots = []
        for i in range(count):
            (rowdir / f"process-{i}").mkdir(parents=True)
            env = bot_env(discord_fake, wavespeed, database=database, cap=cap, mode=mode, shard=(i, count))
            bots.append(BotProcess(discord_fake, env, rowdir / f"process-{i}"))
            stack.push_async_callback(bots[-1].cleanup)
        rss: dict[int, float | None] = {}
        harness = LoopLagMonitor()  # the fakes share this process: if its loop lags, the figures do too
        figures.load.start()
        for bot in bots:  # shard 0 first: it syncs the commands
            await bot.start()
        if mode == "poll" and warmup:
            await warm_up(discord_fake, database, warmup, guilds, cap=cap)
        wavespeed.rng.seed(SEED + run)  # the measured jobs draw the same inference times as the run's SDK
        measured_from = time.monotonic()
        harness.start()
        payloads = interactions(discord_fake, jobs, "bench job", 1310000000000001000, guilds)
        burst = BurstCost.start([bot.process.pid for bot in bots if bot.process is not None])
        before = len(discord_fake.requests)  # the warm-up's answers are not the burst's
        for payload in payloads:
            await discord_fake.dispatch_interaction(payload)
        await burst.until_answered(discord_fake, jobs, timeout=30 + jobs * 0.01, since=before)
        figures.burst = burst
        deliveries = Deliveries(discord_fake, {int(p["id"]): p["token"] for p in payloads}, database)
        deadline = time.monotonic() + 120 + jobs * 0.2
        if backend == "cluster":  # kill the last process once a third of the jobs ended (delivered or failed)
            await deliveries.until(max(1, jobs // 3), timeout=deadline - time.monotonic())
            victim = bots[-1]
            assert victim.process is not None
            rss[count - 1] = peak_rss_mb(victim.process.pid)
            figures.load.bot(victim.process.pid)
            figures.takeover = await kill_owner(victim, database)
        await deliveries.until(jobs, timeout=max(1.0, deadline - time.monotonic()))
        if figures.takeover is not None:  # while its database still exists
            await figures.takeover.measure(deliveries)
        for i, bot in enumerate(bots):
            if bot.process is not None:
                rss[i] = peak_rss_mb(bot.process.pid)
                figures.load.bot(bot.process.pid)
        figures.load.stop()
        await harness.stop()
        figures.harness_lag = harness.summary()
        await asyncio.gather(*(bot.terminate() for bot in bots if bot.process is not None))
    figures.peak_rss_mb = [rss.get(i) for i in range(count)]
    figures.loop_lags_p99_ms = [loop_lag_p99_ms(bot.log()) for bot in bots]
    measured = [p for p in wavespeed.predictions.values() if str(p.input["prompt"]).startswith("bench job ")]
    figures.max_in_flight = max_in_flight(measured)
    rates(figures, wavespeed, since=measured_from)
    tally(figures, payloads, discord_fake, wavespeed)
    record_polls(rowdir / "predictions.json", measured, wavespeed)
    return figures


def record_polls(path: Path, predictions: list[FakePrediction], wavespeed: FakeWaveSpeed) -> None:
    """For a closer look (--workdir): each measured prediction's inference time and its polls, in
    seconds from its submit, as the fake WaveSpeed saw them."""
    polls: dict[str, list[float]] = {}
    for r in wavespeed.result_polls():
        polls.setdefault(r.path.split("/")[4], []).append(r.at)
    rows = [
        {
            "inference": p.scenario.inference_seconds,
            "polls": [round(at - p.created_at, 3) for at in polls.get(p.id, [])],
        }
        for p in predictions
    ]
    path.write_text(json.dumps(rows))


def rates(figures: Figures, wavespeed: FakeWaveSpeed, *, since: float = 0.0) -> None:
    """The peak request rates the fake WaveSpeed saw from `since` on (1 s sliding window)."""
    api = [r for r in wavespeed.requests if r.at >= since and r.path.startswith("/api/")]
    figures.peak_polls_per_s = peak_rate(r.at for r in api if r.path.endswith("/result"))
    figures.peak_requests_per_s = peak_rate(r.at for r in api)


def tally(
    figures: Figures, payloads: list[dict[str, object]], discord_fake: FakeDiscord, wavespeed: FakeWaveSpeed
) -> None:
    """Per job, from the fakes' records: first response, overhead, polls and submits."""
    by_prompt = {p.input["prompt"]: p for p in wavespeed.predictions.values()}
    polls = Counter(r.path.split("/")[4] for r in wavespeed.result_polls())
    submits = Counter((s.json or {}).get("prompt") for s in wavespeed.submits())
    callbacks: dict[str, Recorded] = {}
    deliveries: dict[str, Recorded] = {}
    for r in discord_fake.requests:
        token = r.path.split("/")[3] if r.path.startswith(("/interactions/", "/webhooks/")) else ""
        if r.path.endswith("/callback"):
            callbacks.setdefault(token, r)
        elif r.method == "PATCH" and r.files:
            deliveries.setdefault(token, r)
    for i, payload in enumerate(payloads):
        token = str(payload["token"])
        state = discord_fake._interactions[token]
        if token in callbacks and state.dispatched_at is not None:
            figures.first_responses.append(callbacks[token].at - state.dispatched_at)
        prediction = by_prompt.get(f"bench job {i}")
        delivered = deliveries.get(token)
        if prediction is None or delivered is None:
            figures.failed += 1
            continue
        figures.overheads.append(delivered.at - prediction.completed_at)
        figures.polls.append(polls[prediction.id])
        figures.submits.append(submits[f"bench job {i}"])


async def bench_sdk(jobs: int, *, distribution: str, run: int) -> Figures:
    """The official SDK, in a process of its own (tests/perf/sdk_client.py), against a fake WaveSpeed."""
    figures = Figures("wavespeed SDK", jobs, distribution, run)
    figures.load.client = "SDK"
    fake = FakeWaveSpeed()
    await fake.start()
    fake.scenario = DISTRIBUTIONS[distribution]
    fake.rng.seed(SEED + run)  # each run its own draws: its luck shows in the spread of the runs
    figures.load.start()
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.perf.sdk_client",
        f"--base-url={fake.base_url}",
        f"--api-key={fake.api_key}",
        f"--jobs={jobs}",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await child.communicate()
    figures.load.stop()
    if child.returncode != 0:
        raise SystemExit(f"the SDK's process failed (exit {child.returncode})")
    answer = json.loads(out)
    returned: dict[str, float] = answer["returned"]
    figures.failed = answer["failed"]
    figures.load.clients = answer["cpu"]
    for prediction in fake.predictions.values():
        prompt = prediction.input["prompt"]
        if prompt in returned:
            figures.overheads.append(returned[prompt] - prediction.completed_at)
            figures.polls.append(len(fake.result_polls(prediction.id)))
            figures.submits.append(1)
    figures.max_in_flight = max_in_flight(list(fake.predictions.values()))
    rates(figures, fake)
    await fake.close()
    return figures


def counts(text: str) -> list[int]:
    """ "1,100" -> [1, 100]; 0 (or nothing) runs no row."""
    return [int(j) for j in text.split(",") if j.strip() and int(j) > 0]


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--jobs", default="1,100,1000", help="concurrent jobs for the bot, comma separated")
    parser.add_argument("--sdk-jobs", default="1,100,1000", help="concurrent jobs for the SDK reference")
    parser.add_argument(
        "--modes", default=",".join(MODES), help="bot modes on sqlite: poll (default setup), push (webhook), sync"
    )
    parser.add_argument(
        "--distributions",
        default=",".join(DISTRIBUTIONS),
        help="inference times, comma separated: uniform (2-8 s), lognormal (median 5 s, 90 %% within 3.5-7 s)",
    )
    parser.add_argument("--runs", type=int, default=1, help="run everything this many times (cells: lowest-highest)")
    parser.add_argument(
        "--warmup", type=int, default=100, help="jobs a poll-mode bot sees finish before a row (0: cold)"
    )
    parser.add_argument(
        "--backends",
        default="sqlite",
        help="comma separated: sqlite (one process), postgresql (one process), cluster (--processes on one "
        "database, one of them killed mid-run); the PostgreSQL rows run in poll mode",
    )
    parser.add_argument("--workdir", help="keep each row's databases and bot logs in this (new) directory")
    parser.add_argument("--processes", type=int, default=3, help="bot processes (and shards) in the cluster row")
    parser.add_argument(
        "--cap", type=int, default=1000, help="MAX_CONCURRENT_JOBS, at most (each row: min(cap, max(3, jobs)))"
    )
    args = parser.parse_args()
    args.backends = [b for b in args.backends.split(",") if b]
    if unknown := set(args.backends) - set(BACKENDS):
        parser.error(f"unknown backend(s) {', '.join(sorted(unknown))}: choose from {', '.join(BACKENDS)}")
    args.distributions = [d for d in args.distributions.split(",") if d]
    if unknown := set(args.distributions) - set(DISTRIBUTIONS):
        parser.error(f"unknown distribution(s) {', '.join(sorted(unknown))}: choose from {', '.join(DISTRIBUTIONS)}")
    if "cluster" in args.backends and args.processes < 2:
        parser.error("--processes must be 2 or more for the cluster row (one is killed)")
    return args


async def main() -> None:
    args = arguments()
    guilds = shard_guilds(args.processes if "cluster" in args.backends else 1)
    rows: list[Figures] = []
    with contextlib.ExitStack() as keep:
        tmp = args.workdir or keep.enter_context(tempfile.TemporaryDirectory())
        for run in range(1, args.runs + 1):
            for distribution in args.distributions:
                for jobs in counts(args.sdk_jobs):
                    rows.append(await bench_sdk(jobs, distribution=distribution, run=run))
                    print(f"run {run}, {distribution}: {table(rows[-1:]).splitlines()[-1]}", flush=True)
                    print(f"    ({rows[-1].load.summary})", flush=True)
                for jobs in counts(args.jobs):
                    for backend in args.backends:
                        for mode in args.modes.split(",") if backend == "sqlite" else ["poll"]:
                            cap, began = min(args.cap, max(3, jobs)), time.monotonic()
                            figures = await bench_bot(
                                jobs,
                                Path(tmp),
                                mode=mode,
                                distribution=distribution,
                                run=run,
                                warmup=args.warmup,
                                backend=backend,
                                processes=args.processes,
                                cap=cap,
                                guilds=guilds,
                            )
                            rows.append(figures)
                            print(f"run {run}, {distribution}: {table(rows[-1:]).splitlines()[-1]}", flush=True)
                            took = time.monotonic() - began
                            print(
                                f"    (the harness's own {figures.harness_lag}; the row took {took:.0f} s)", flush=True
                            )
                            print(f"    ({figures.load.summary})", flush=True)
                            if (takeover := rows[-1].takeover) is not None:
                                print(f"    (takeover: {takeover.summary})", flush=True)
                            if (burst := rows[-1].burst) is not None:
                                print(f"    (burst: {burst.summary()})", flush=True)
    for distribution in args.distributions:
        print()
        print(f"Inference times: {distribution}" + (f", {args.runs} runs (lowest-highest)" if args.runs > 1 else ""))
        print()
        print(table([f for f in rows if f.distribution == distribution]))
    if text := ratios(rows):
        print()
        print(text)
    print()
    print("\n".join(targets(f) for f in rows if f.is_bot))
    for f in rows:
        if f.takeover is not None:
            print(f"{f.jobs} jobs, {f.client}, takeover (LEASE_SECONDS={LEASE_SECONDS:g}): {f.takeover.summary}")
    print()
    for f in rows:
        if f.burst is not None:
            print(f"run {f.run}, {f.distribution}, {f.jobs} jobs, {f.client}, burst: {f.burst.summary()}")
    print()
    print("The machine during each row:")
    print(machine(rows))


if __name__ == "__main__":
    asyncio.run(main())
