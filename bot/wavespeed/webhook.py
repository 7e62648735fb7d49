"""Push instead of poll: WaveSpeed posts a finished prediction to the bot's webhook.

WaveSpeed signs each call: `webhook-signature: v3,<hex>` is HMAC-SHA256 over
`{webhook-id}.{webhook-timestamp}.{raw body}`, keyed with the account's webhook secret *minus its
`whsec_` prefix* (the rest is used as it is, not base64-decoded). Several space-separated
signatures may come in one header while a secret is rotated; one match is enough. A call is
refused, with a typed reason that the server logs, when a header is missing, the timestamp is not
a whole number of seconds within 300 s of now, no signature matches, or its webhook id was
already accepted (a replay). Polling carries on as a safety net, so a refused call only costs
latency. The HTTP side (deadlines, connection cap) is `bot.httpserver.GuardedHTTPServer`.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web
from pydantic import SecretStr, ValidationError

from bot.httpserver import GuardedHTTPServer
from bot.wavespeed.models import Prediction

log = logging.getLogger(__name__)

PATH = "/wavespeed/webhook"
TOLERANCE = 300  # seconds: WaveSpeed's documented maximum age, either way
PREFIX = "whsec_"
MAX_BODY = 1024 * 1024
MAX_REMEMBERED = 100_000  # ids of accepted calls; more than 5 minutes of pushes at WaveSpeed's top tier
_SECONDS = re.compile(r"[0-9]{1,12}")


class WebhookVerificationError(ValueError):
    """A refused call. `reason` is what the log says; `status` what the caller gets."""

    reason = "refused"
    status = 401

    def __init__(self, detail: str, *, webhook_id: str = "") -> None:
        super().__init__(detail)
        self.webhook_id = webhook_id


class MissingHeaderError(WebhookVerificationError):
    reason, status = "missing header", 400


class InvalidTimestampError(WebhookVerificationError):
    reason = "stale or malformed timestamp"


class InvalidSignatureError(WebhookVerificationError):
    reason = "bad signature"


class ReplayedWebhookError(WebhookVerificationError):
    reason, status = "replayed", 409


def signing_key(secret: str) -> bytes:
    """The HMAC key: the secret without its `whsec_` prefix, which may or may not be configured."""
    key = secret.strip().removeprefix(PREFIX)
    if not key:
        raise ValueError("the webhook secret is empty")
    return key.encode()


def sign(secret: str, webhook_id: str, timestamp: str, body: bytes) -> str:
    """The header value WaveSpeed sends (for tests and tools)."""
    return "v3," + _digest(signing_key(secret), webhook_id, timestamp, body).decode()


def _digest(key: bytes, webhook_id: str, timestamp: str, body: bytes) -> bytes:
    message = f"{webhook_id}.{timestamp}.".encode("utf-8", "surrogateescape") + body
    return hmac.new(key, message, hashlib.sha256).hexdigest().encode()


def verify(
    secret: str, headers: Mapping[str, str], body: bytes, *, now: float | None = None, tolerance: int = TOLERANCE
) -> tuple[str, int]:
    """Check headers, age and signature (not replays: see `WebhookVerifier`); returns the webhook
    id and timestamp, or raises a `WebhookVerificationError`."""
    webhook_id = headers.get("webhook-id", "")
    timestamp = headers.get("webhook-timestamp", "")
    signatures = headers.get("webhook-signature", "")
    for name, value in (
        ("webhook-id", webhook_id),
        ("webhook-timestamp", timestamp),
        ("webhook-signature", signatures),
    ):
        if not value:
            raise MissingHeaderError(f"no {name} header", webhook_id=webhook_id)
    if not _SECONDS.fullmatch(timestamp):  # no "nan", "inf", "1e9", "-5", " 17…", fractions
        raise InvalidTimestampError("the timestamp is not a whole number of seconds", webhook_id=webhook_id)
    seconds = int(timestamp)
    if abs((time.time() if now is None else now) - seconds) > tolerance:
        raise InvalidTimestampError(f"the timestamp is more than {tolerance} s off", webhook_id=webhook_id)
    expected = _digest(signing_key(secret), webhook_id, timestamp, body)
    for candidate in signatures.split():
        version, _, value = candidate.partition(",")
        if version == "v3" and hmac.compare_digest(expected, value.encode("utf-8", "replace")):
            return webhook_id, seconds
    raise InvalidSignatureError("no v3 signature matches", webhook_id=webhook_id)


class WebhookVerifier:
    """`verify` plus replay protection: the ids of accepted calls are remembered until their
    timestamp is too old to pass anyway (bounded: at `max_remembered` the soonest to expire goes)."""

    def __init__(self, secret: str, *, tolerance: int = TOLERANCE, max_remembered: int = MAX_REMEMBERED) -> None:
        signing_key(secret)  # fail at start-up, not on the first call
        self._secret, self._tolerance, self._max = secret, tolerance, max_remembered
        self._seen: dict[str, float] = {}  # webhook id -> when its timestamp expires
        self._expiries: list[tuple[float, str]] = []  # a heap of the same

    def __repr__(self) -> str:
        return f"WebhookVerifier(remembered={len(self._seen)})"  # never the secret

    def verify(self, headers: Mapping[str, str], body: bytes, *, now: float | None = None) -> str:
        now = time.time() if now is None else now
        webhook_id, seconds = verify(self._secret, headers, body, now=now, tolerance=self._tolerance)
        while self._expiries and (self._expiries[0][0] < now or len(self._expiries) >= self._max):
            _, old = heapq.heappop(self._expiries)
            self._seen.pop(old, None)
        if webhook_id in self._seen:
            raise ReplayedWebhookError("this webhook id was already accepted", webhook_id=webhook_id)
        expiry = seconds + self._tolerance
        self._seen[webhook_id] = expiry
        heapq.heappush(self._expiries, (expiry, webhook_id))
        return webhook_id

    @property
    def remembered(self) -> int:
        return len(self._seen)


class WebhookReceiver:
    """The webhook route's handler: verified predictions go to `deliver` (recorded in the database
    for whichever process runs the job). `mount` adds it to an Application (the bot's one HTTP
    server, `bot.ops.server`), which must cap bodies at `MAX_BODY`."""

    def __init__(self, deliver: Callable[[Prediction], Awaitable[None]], secret: SecretStr | str) -> None:
        plain = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
        self._deliver, self.verifier = deliver, WebhookVerifier(plain)

    def mount(self, app: web.Application) -> None:
        app.router.add_post(PATH, self.receive)

    async def receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            self.verifier.verify(request.headers, body)
        except WebhookVerificationError as refusal:
            shown = repr(refusal.webhook_id[:80]) if refusal.webhook_id else "none"
            log.warning("refused a WaveSpeed webhook call (%s: %s); webhook-id %s", refusal.reason, refusal, shown)
            return web.Response(status=refusal.status, text=refusal.reason)
        try:
            prediction = Prediction.model_validate_json(body)
        except ValidationError:
            log.warning("refused a WaveSpeed webhook call: the body is not a prediction")
            return web.Response(status=400, text="not a prediction")
        await self._deliver(prediction)
        return web.Response(status=200, text="ok")


class WebhookServer:
    """The webhook route alone on a `GuardedHTTPServer` of its own (the tests of the receiver; the
    bot serves it beside its other routes). The limits are `GuardedHTTPServer`'s, with its defaults."""

    def __init__(
        self,
        deliver: Callable[[Prediction], Awaitable[None]],
        secret: SecretStr | str,
        *,
        host: str,
        port: int,
        request_timeout: float = 10.0,
        keepalive_timeout: float = 5.0,
        max_connections: int = 256,
        max_body: int = MAX_BODY,
    ) -> None:
        self.receiver = WebhookReceiver(deliver, secret)
        self.verifier = self.receiver.verifier
        self.app = web.Application(client_max_size=max_body)
        self.receiver.mount(self.app)
        self.http = GuardedHTTPServer(
            self.app,
            host=host,
            port=port,
            request_timeout=request_timeout,
            keepalive_timeout=keepalive_timeout,
            max_connections=max_connections,
        )
        self._host = host

    async def start(self) -> None:
        await self.http.start()
        log.info("listening for WaveSpeed webhooks on %s:%d%s", self._host, self.http.port, PATH)

    async def close(self) -> None:
        await self.http.close()
