"""The bot's one HTTP server, always on: `/metrics`, `/healthz`, `/readyz`, and WaveSpeed's webhook
when push is on.

It runs on `bot.httpserver.GuardedHTTPServer`, so every path gets the webhook's protections: a
request must arrive whole within 10 s, idle connections close after 5 s, at most 256 connections
are held (the oldest idle one goes first), and bodies are capped at 1 MiB. Only the webhook is
meant for the internet; a reverse proxy should forward `/wavespeed/webhook` alone (README).

The server starts before anything else (the database, Discord), so health and readiness answer
while start-up retries, and it stops last, so `/readyz` says "draining" for the whole grace period.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from bot.httpserver import GuardedHTTPServer
from bot.ops.health import Readiness
from bot.ops.prometheus import CONTENT_TYPE, PrometheusMetrics
from bot.wavespeed.webhook import MAX_BODY, PATH, WebhookReceiver

log = logging.getLogger(__name__)

# A scrape waits at most this long for figures read from the database (the line's length).
REFRESH_TIMEOUT = 1.0
NO_STORE = {"Cache-Control": "no-store"}


class OpsServer:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        metrics: PrometheusMetrics,
        readiness: Readiness,
        webhook: WebhookReceiver | None = None,
        request_timeout: float = 10.0,
        keepalive_timeout: float = 5.0,
        max_connections: int = 256,
    ) -> None:
        self._metrics, self._readiness, self._host = metrics, readiness, host
        # Read before each scrape: figures that live in the database, not in this process.
        self.refresh: Callable[[], Awaitable[None]] | None = None
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_get("/metrics", self._scrape)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self.paths = ["/metrics", "/healthz", "/readyz"]
        if webhook is not None:
            webhook.mount(app)
            self.paths.append(PATH)
        self.http = GuardedHTTPServer(
            app,
            host=host,
            port=port,
            request_timeout=request_timeout,
            keepalive_timeout=keepalive_timeout,
            max_connections=max_connections,
        )

    @property
    def port(self) -> int:
        return self.http.port

    async def start(self) -> None:
        await self.http.start()
        log.info("HTTP server on %s:%d: %s", self._host, self.port, ", ".join(self.paths))

    async def close(self) -> None:
        await self.http.close()

    async def _scrape(self, request: web.Request) -> web.Response:
        if self.refresh is not None:
            try:
                async with asyncio.timeout(REFRESH_TIMEOUT):
                    await self.refresh()
            except Exception as error:  # the last figures stay; the scrape still answers
                log.debug("metrics refresh failed: %s", type(error).__name__)
        return web.Response(body=self._metrics.render(), headers={"Content-Type": CONTENT_TYPE, **NO_STORE})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"}, headers=NO_STORE)

    async def _readyz(self, request: web.Request) -> web.Response:
        report = await self._readiness.report()
        return web.json_response(report.json(), status=200 if report.ready else 503, headers=NO_STORE)
