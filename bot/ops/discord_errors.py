"""Discord's error answers, counted: a trace on discord.py's own HTTP session.

discord.py sends every REST request (interaction callbacks and webhook edits included) through one
aiohttp session, which takes a `TraceConfig` (`Client(http_trace=...)`). At the end of each request
the trace reads an error answer's JSON `code` (Discord's error code: 10015 Unknown Webhook, 50013
Missing Permissions, 40005 too large...) and reports the status and code to the metrics. The body
is read into aiohttp's cache, where discord.py then finds it; a success is not touched.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import aiohttp

from bot.metrics import Metrics


def error_trace(metrics: Metrics) -> aiohttp.TraceConfig:
    async def on_request_end(
        session: aiohttp.ClientSession, context: SimpleNamespace, params: aiohttp.TraceRequestEndParams
    ) -> None:
        response = params.response
        if response.status < 400:
            return
        code = 0
        if response.content_type == "application/json":
            try:
                body = json.loads(await response.read())
                code = int(body.get("code", 0)) if isinstance(body, dict) else 0
            except (ValueError, TypeError, aiohttp.ClientError):
                code = 0
        metrics.discord_error(response.status, code)

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_request_end)
    return trace
