"""`/healthz` and `/readyz` of the real bot: before the gateway is ready, while ready, while draining;
and the HTTP server's protections on every path, not only the webhook's."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from bot.config import Settings
from bot.main import serve
from bot.ops.health import Readiness
from bot.ops.prometheus import PrometheusMetrics
from bot.ops.server import OpsServer
from bot.wavespeed.webhook import PATH, WebhookReceiver
from tests.fakes.discord import FakeDiscord
from tests.fakes.wavespeed import FakeWaveSpeed, Scenario
from tests.helpers import answered

SLACK = 1.0


async def get(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(url) as answer:
        return answer.status, await answer.json()


async def until(url: str, status: int, timeout: float = 15.0) -> dict[str, Any]:
    """Probe `url` as an orchestrator does until it answers `status`; its JSON."""
    deadline = time.monotonic() + timeout
    while (found := await get(url))[0] != status:
        assert time.monotonic() < deadline, f"{url} still answers {found}"
        await asyncio.sleep(0.05)
    return dict(found[1])


async def test_ready_only_once_the_gateway_is(make_settings: Callable[..., Settings], discord_fake: FakeDiscord):
    discord_fake.hold_ready = asyncio.Event()  # IDENTIFY arrives, READY waits
    ports: list[int] = []
    stop = asyncio.Event()
    task = asyncio.create_task(serve(make_settings(), stop=stop, on_listening=ports.append))
    try:
        await asyncio.wait_for(discord_fake.identifying.wait(), 15)
        base = f"http://127.0.0.1:{ports[0]}"
        assert await get(f"{base}/healthz") == (200, {"status": "alive"})
        status, report = await get(f"{base}/readyz")
        assert status == 503 and report["status"] == "not ready"
        assert report["checks"]["discord"].startswith("not connected")
        assert report["checks"]["database"] == "ok" and report["checks"]["jobs"] == "ok"

        discord_fake.hold_ready.set()
        ready = await until(f"{base}/readyz", 200)
        assert ready == {"status": "ready", "checks": {"discord": "ok", "database": "ok", "jobs": "ok"}}
    finally:
        discord_fake.hold_ready.set()
        stop.set()
        await asyncio.wait_for(task, 15)


async def test_draining_after_sigterm_is_not_ready_but_alive(start_bot, wavespeed: FakeWaveSpeed):
    wavespeed.scenario = Scenario(inference_seconds=60)  # still generating when the bot is told to stop
    bot = await start_bot(shutdown_grace_seconds=3)
    await until(f"{bot.http_url}/readyz", 200)
    payload = await bot.imagine(prompt="a long one")
    await answered(bot.discord, payload)
    await wavespeed.requests.wait_for(lambda r: r.method == "POST" and r.status == 200)

    bot.stop_event.set()
    asked = time.monotonic()
    report = await until(f"{bot.http_url}/readyz", 503, timeout=2)
    assert report["checks"]["jobs"].startswith("draining")
    assert (await get(f"{bot.http_url}/healthz"))[0] == 200  # alive: not to be restarted for it
    assert time.monotonic() - asked < 3  # within the grace period
    await asyncio.wait_for(bot.task, 15)


class Hanging:
    """A storage whose clock never answers (a database held by a lock, a lost server)."""

    async def clock(self) -> float:
        await asyncio.Event().wait()
        return 0.0


async def test_a_database_that_does_not_answer_is_not_ready_within_the_timeout():
    readiness = Readiness(db_timeout=0.3)
    readiness.storage = Hanging()  # type: ignore[assignment]
    started = time.monotonic()
    report = await readiness.report()
    elapsed = time.monotonic() - started
    assert not report.ready and report.checks["database"] == "no answer within 0.3 s"
    assert 0.3 <= elapsed < 0.3 + SLACK


async def test_every_path_gets_the_webhook_servers_protections():
    async def deliver(prediction: Any) -> None:
        raise AssertionError("nothing valid is posted here")

    deadline = 0.5
    server = OpsServer(
        host="127.0.0.1",
        port=0,
        metrics=PrometheusMetrics(price_per_image=0.04, process=False),
        readiness=Readiness(),
        webhook=WebhookReceiver(deliver, "whsec_dGVzdC13ZWJob29rLWtleQ"),
        request_timeout=deadline,
    )
    await server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        # A client that trickles its request's headers is cut off at the deadline.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        started = time.monotonic()
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        while not reader.at_eof():
            writer.write(b"a")
            await asyncio.sleep(0.05)
            try:
                await asyncio.wait_for(reader.read(1024), 0.01)
            except (TimeoutError, ConnectionResetError):
                continue
        closed_after = time.monotonic() - started
        writer.close()
        assert deadline <= closed_after < deadline + SLACK and server.http.counts["expired"] == 1
        # An oversize body is refused, on a scrape path as on the webhook.
        async with aiohttp.ClientSession() as session:
            for path in ("/metrics", PATH):
                async with session.post(base + path, data=b" " * (1024 * 1024 + 1)) as answer:
                    assert answer.status == 413, path
            async with session.get(base + "/metrics") as answer:
                assert answer.status == 200 and "imagine_jobs_finished_total" in await answer.text()
            async with session.get(base + "/readyz") as answer:
                assert answer.status == 503  # nothing started: not ready, and says why
                assert (await answer.json())["checks"]["discord"] == "not connected (starting)"
    finally:
        await server.close()
