"""Push instead of poll: WaveSpeed posts a finished prediction to the bot's webhook.

WaveSpeed signs each call: `webhook-signature: v3,<hex>` is HMAC-SHA256 with the account's webhook
secret over `{webhook-id}.{webhook-timestamp}.{raw body}`. A call with a bad signature or a
timestamp more than five minutes off is refused, so nobody can forge a result; polling carries on
as a safety net either way, so a lost or refused call only costs latency.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Mapping

from aiohttp import web
from pydantic import SecretStr, ValidationError

from bot.wavespeed.client import WaveSpeedClient
from bot.wavespeed.models import Prediction

log = logging.getLogger(__name__)

PATH = "/wavespeed/webhook"
TOLERANCE = 300.0


def sign(secret: str, webhook_id: str, timestamp: str, body: bytes) -> str:
    message = f"{webhook_id}.{timestamp}.".encode() + body
    return "v3," + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify(secret: str, headers: Mapping[str, str], body: bytes, *, now: float | None = None) -> bool:
    webhook_id, timestamp = headers.get("webhook-id", ""), headers.get("webhook-timestamp", "")
    signature = headers.get("webhook-signature", "")
    try:
        age = abs((now if now is not None else time.time()) - float(timestamp))
    except ValueError:
        return False
    if not webhook_id or age > TOLERANCE:
        return False
    return hmac.compare_digest(sign(secret, webhook_id, timestamp, body), signature)


class WebhookServer:
    """A small HTTP endpoint in the bot process that hands pushed predictions to the client."""

    def __init__(self, client: WaveSpeedClient, secret: SecretStr, *, host: str, port: int) -> None:
        self._client, self._secret, self._host, self._port = client, secret, host, port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_post(PATH, self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()
        log.info("listening for WaveSpeed webhooks on %s:%d%s", self._host, self._port, PATH)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not verify(self._secret.get_secret_value(), request.headers, body):
            log.warning("refused a webhook call with a bad or stale signature")
            return web.Response(status=401, text="bad signature")
        try:
            prediction = Prediction.model_validate_json(body)
        except ValidationError:
            return web.Response(status=400, text="not a prediction")
        self._client.push(prediction)
        return web.Response(status=200, text="ok")
