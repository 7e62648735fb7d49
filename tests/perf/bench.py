"""Benchmark: the real bot process against the fake Discord and WaveSpeed, and the official
`wavespeed` SDK against the same fake WaveSpeed, in one run. Prints a table of medians and ratios.

    python -m tests.perf.bench                      # 1, 100 and 1000 concurrent jobs
    python -m tests.perf.bench --jobs 1,10 --sdk-jobs 1,10   # a quick run
    python -m tests.perf.bench --modes poll                  # only the default mode (also: push, sync)

Every figure comes from the fakes' own records, on one clock (this process's monotonic clock):
- overhead: from the moment the fake WaveSpeed marks a prediction completed to the moment the fake
  Discord receives its images (for the SDK: to the moment `run()` returns the result);
- polls and submits per job, as the fake WaveSpeed counted them;
- first response: from the fake gateway sending INTERACTION_CREATE to the fake receiving the callback;
- event-loop lag p99: measured inside the bot (`bot.metrics`), read from its log;
- peak RSS: the bot process's VmHWM from /proc.
Inference times are drawn uniformly from 2-8 s, as the issue asks. The machine is noisy: compare ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from bot.metrics import LoopLagMonitor
from tests.botprocess import BotProcess, fake_env, free_port
from tests.fakes.discord import FakeDiscord
from tests.fakes.recorder import Recorded
from tests.fakes.wavespeed import TEXT_TO_IMAGE, FakeWaveSpeed, Scenario

INFERENCE = (2.0, 8.0)


@dataclass
class Figures:
    client: str
    jobs: int
    overheads: list[float] = field(default_factory=list)
    polls: list[int] = field(default_factory=list)
    submits: list[int] = field(default_factory=list)
    first_responses: list[float] = field(default_factory=list)
    loop_lag_p99_ms: float | None = None
    peak_rss_mb: float | None = None
    failed: int = 0
    harness_lag: str = ""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("nan")


def ms(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value * 1000:.0f} ms"


def peak_rss_mb(pid: int) -> float | None:
    """The process's peak resident set (VmHWM), Linux only."""
    found = re.search(r"VmHWM:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())
    return int(found[1]) / 1024 if found else None


def scenario() -> Scenario:
    return Scenario(queue_seconds=0.0, inference_range=INFERENCE, image_size=(256, 256))


async def delivered_all(fake: FakeDiscord, tokens: set[str], *, timeout: float) -> None:
    """Until every job's images reached the fake. Scans only new requests, every 100 ms: the usual
    `wait_for` re-reads the whole log on every request, which at 1000 jobs would slow the fakes
    (and so the measurement) down."""
    waiting, seen = set(tokens), 0
    async with asyncio.timeout(timeout):
        while waiting:
            await asyncio.sleep(0.1)
            new = [fake.requests[i] for i in range(seen, len(fake.requests))]
            seen += len(new)
            for r in new:
                delivered = r.method == "PATCH" and r.files and r.path.startswith("/webhooks/")
                unanswered = r.path.endswith("/callback") and r.status == 404  # too late: counted as failed
                if delivered or unanswered:
                    waiting.discard(r.path.split("/")[3])


MODES = ("poll", "push", "sync")


async def bench_bot(jobs: int, workdir: Path, *, mode: str) -> Figures:
    figures = Figures(f"bot ({mode})", jobs)
    discord_fake, wavespeed = FakeDiscord(), FakeWaveSpeed()
    await discord_fake.start()
    await wavespeed.start()
    wavespeed.scenario = scenario()
    env = fake_env(
        discord_fake,
        wavespeed,
        DATABASE_URL=f"sqlite:///{workdir / f'bench-{jobs}-{mode}.db'}",
        MAX_CONCURRENT_JOBS=str(max(3, jobs)),
        USER_MAX_ACTIVE_IMAGES="0",
        USER_WINDOW_IMAGES="0",
        GUILD_DAILY_IMAGES="0",
        GLOBAL_DAILY_IMAGES="0",
        JOB_TIMEOUT_SECONDS="300",
        LOG_LEVEL="INFO",
    )
    if mode == "sync":
        env.update(WAVESPEED_SYNC_MODE="true")
    if mode == "push":
        port = free_port()
        env.update(
            WEBHOOK_URL=f"http://127.0.0.1:{port}",
            WEBHOOK_HOST="127.0.0.1",
            WEBHOOK_PORT=str(port),
            WAVESPEED_WEBHOOK_SECRET=wavespeed.webhook_secret,
        )
    bot = BotProcess(discord_fake, env, workdir)
    harness = LoopLagMonitor()  # the fakes share this process: if its loop lags, the figures do too
    try:
        await bot.start()
        harness.start()
        payloads = [
            discord_fake.interaction("imagine", {"prompt": f"bench job {i}"}, user_id=1310000000000001000 + i)
            for i in range(jobs)
        ]
        for payload in payloads:
            await discord_fake.dispatch_interaction(payload)
        await delivered_all(discord_fake, {p["token"] for p in payloads}, timeout=120 + jobs * 0.2)
        assert bot.process is not None
        figures.peak_rss_mb = peak_rss_mb(bot.process.pid)
        await harness.stop()
        figures.harness_lag = harness.summary()
        await bot.terminate()
    finally:
        await bot.cleanup()
    by_prompt = {p.input["prompt"]: p for p in wavespeed.predictions.values()}
    callbacks: dict[str, Recorded] = {}
    deliveries: dict[str, Recorded] = {}
    for r in discord_fake.requests:
        token = r.path.split("/")[3] if r.path.startswith(("/interactions/", "/webhooks/")) else ""
        if r.path.endswith("/callback"):
            callbacks.setdefault(token, r)
        elif r.method == "PATCH" and r.files:
            deliveries.setdefault(token, r)
    for i, payload in enumerate(payloads):
        token = payload["token"]
        state = discord_fake._interactions[token]
        if token in callbacks and state.dispatched_at is not None:
            figures.first_responses.append(callbacks[token].at - state.dispatched_at)
        prediction = by_prompt.get(f"bench job {i}")
        delivered = deliveries.get(token)
        if prediction is None or delivered is None:
            figures.failed += 1
            continue
        figures.overheads.append(delivered.at - prediction.completed_at)
        figures.polls.append(len(wavespeed.result_polls(prediction.id)))
        figures.submits.append(sum(1 for s in wavespeed.submits() if (s.json or {}).get("prompt") == f"bench job {i}"))
    lag = re.search(r"event loop lag: .*?p99 ([\d.]+) ms", bot.log())
    figures.loop_lag_p99_ms = float(lag[1]) if lag else None
    await discord_fake.close()
    await wavespeed.close()
    return figures


async def bench_sdk(jobs: int) -> Figures:
    import wavespeed as sdk  # type: ignore[import-untyped,import-not-found,unused-ignore]  # the official SDK: pip install -e ".[bench]"

    figures = Figures("wavespeed SDK", jobs)
    fake = FakeWaveSpeed()
    await fake.start()
    fake.scenario = scenario()
    client = sdk.Client(api_key=fake.api_key, base_url=fake.base_url)
    returned: dict[str, float] = {}

    def one(i: int) -> None:
        client.run(TEXT_TO_IMAGE, {"prompt": f"sdk job {i}"}, poll_interval=1.0)  # the SDK's default
        returned[f"sdk job {i}"] = time.monotonic()

    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        results = await asyncio.gather(
            *(loop.run_in_executor(pool, one, i) for i in range(jobs)), return_exceptions=True
        )
    figures.failed = sum(isinstance(r, BaseException) for r in results)
    for prediction in fake.predictions.values():
        prompt = prediction.input["prompt"]
        if prompt in returned:
            figures.overheads.append(returned[prompt] - prediction.completed_at)
            figures.polls.append(len(fake.result_polls(prediction.id)))
            figures.submits.append(1)
    await fake.close()
    return figures


def table(rows: list[Figures]) -> str:
    head = "| jobs | client | overhead median | overhead p95 | polls/job | submits/job | first response median | first response p99 | loop lag p99 | peak RSS | failed |"
    lines = [head, "|" + "---|" * 11]
    for f in rows:
        lines.append(
            f"| {f.jobs} | {f.client} | {ms(statistics.median(f.overheads) if f.overheads else None)} | "
            f"{ms(pct(f.overheads, 0.95))} | {statistics.mean(f.polls) if f.polls else float('nan'):.2f} | "
            f"{statistics.mean(f.submits) if f.submits else float('nan'):.2f} | "
            f"{ms(statistics.median(f.first_responses) if f.first_responses else None)} | {ms(pct(f.first_responses, 0.99))} | "
            f"{'-' if f.loop_lag_p99_ms is None else f'{f.loop_lag_p99_ms:.0f} ms'} | "
            f"{'-' if f.peak_rss_mb is None else f'{f.peak_rss_mb:.0f} MB'} | {f.failed} |"
        )
    return "\n".join(lines)


def ratios(rows: list[Figures]) -> str:
    out = []
    for bot in (r for r in rows if r.client.startswith("bot")):
        ref = next((r for r in rows if not r.client.startswith("bot") and r.jobs == bot.jobs), None)
        if ref is None or not ref.overheads or not bot.overheads:
            continue
        overhead = statistics.median(bot.overheads) / statistics.median(ref.overheads)
        polls = statistics.mean(bot.polls) / statistics.mean(ref.polls)
        out.append(
            f"{bot.jobs} jobs, {bot.client}: overhead median / SDK = {overhead:.2f}, polls per job / SDK = {polls:.2f}"
        )
    return "\n".join(out)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", default="1,100,1000", help="concurrent jobs for the bot, comma separated")
    parser.add_argument("--sdk-jobs", default="1,100,1000", help="concurrent jobs for the SDK reference")
    parser.add_argument(
        "--modes", default=",".join(MODES), help="bot modes: poll (default setup), push (webhook), sync (sync mode)"
    )
    args = parser.parse_args()
    rows: list[Figures] = []
    with tempfile.TemporaryDirectory() as tmp:
        for jobs in [int(j) for j in args.sdk_jobs.split(",") if j]:
            rows.append(await bench_sdk(jobs))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
        for jobs in [int(j) for j in args.jobs.split(",") if j]:
            for mode in args.modes.split(","):
                rows.append(await bench_bot(jobs, Path(tmp), mode=mode))
                print(table(rows[-1:]).splitlines()[-1], flush=True)
                print(f"    (the harness's own {rows[-1].harness_lag})", flush=True)
    rows.sort(key=lambda f: (f.jobs, f.client))
    print()
    print(table(rows))
    print()
    print(ratios(rows))


if __name__ == "__main__":
    asyncio.run(main())
