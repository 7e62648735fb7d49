"""A fake WaveSpeed v3 API on 127.0.0.1 that follows the API page in ../shared/api/.

Submit (`POST /api/v3/{model}`) creates a prediction whose status moves with the clock:
`created` for `queue_seconds`, `processing` for `inference_seconds`, then the scenario's final
status. `GET /api/v3/predictions/{id}/result` answers with the `{code, message, data}` envelope,
fields present or absent by status as the notes describe. Outputs are served by the fake itself
under `/cdn/...`, without auth, like a CDN. A `Scenario` scripts everything else: latency, failed
jobs, 401/429/5xx, malformed bodies, hangs, connection resets, NSFW flags and huge images.
Every request is recorded in `requests` for the assertions.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import math
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import aiohttp
from aiohttp import web

from tests.fakes.images import CONTENT_TYPES, make_image
from tests.fakes.recorder import Recorded, RequestLog, serve_on_loopback

# A scripted answer: an HTTP status, or one of these behaviours.
Scripted = int | Literal["malformed", "html", "envelope-error", "hang", "accept-then-hang", "reset"]

TEXT_TO_IMAGE = "wavespeed-ai/flux-kontext-pro/text-to-image"
EDIT = "wavespeed-ai/flux-kontext-pro"
MULTI = "wavespeed-ai/flux-kontext-pro/multi"
MODELS = {TEXT_TO_IMAGE, EDIT, MULTI, "wavespeed-ai/flux-kontext-max/text-to-image", "wavespeed-ai/flux-kontext-max"}
SEED = 1234  # every fake draws the same inference times, in the same order
RATIOS = {"21:9", "16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16", "9:21"}


@dataclass
class Scenario:
    queue_seconds: float = 0.05
    inference_seconds: float = 0.3
    inference_range: tuple[float, float] | None = None  # each prediction draws its own from this (uniform)
    # ... or from a log-normal: (median, sigma of the logarithm); see `draw_inference`
    inference_lognormal: tuple[float, float] | None = None
    latency_seconds: float = 0.0  # added to every API answer
    final_status: str = "completed"
    error: str = "internal error"
    error_code: int | None = 1200
    outputs_count: int | None = None  # None: as many as num_images
    foreign_outputs: list[str] = field(default_factory=list)  # put before the real outputs (file://, ...)
    nsfw_field: Literal["present", "null", "missing"] = "present"
    nsfw_flags: list[bool] | None = None  # None: all False
    image_format: str = "png"
    image_size: tuple[int, int] = (64, 64)
    image_noise: bool = False
    image_content_type: str | None = None  # None: the format's own type
    submit_responses: list[Scripted] = field(default_factory=list)  # consumed one per submit
    result_responses: list[Scripted] = field(default_factory=list)  # consumed one per result poll
    download_responses: list[Scripted] = field(default_factory=list)  # consumed one per output download
    retry_after: float = 1.0
    sync_wait_seconds: float = 60.0  # how long a submit with `enable_sync_mode` waits, at most


@dataclass
class FakePrediction:
    id: str
    model: str
    input: dict[str, Any]
    scenario: Scenario
    created_at: float  # monotonic
    created_wall: datetime

    @property
    def completed_at(self) -> float:
        return self.created_at + self.scenario.queue_seconds + self.scenario.inference_seconds

    @property
    def status(self) -> str:
        elapsed = time.monotonic() - self.created_at
        if elapsed < self.scenario.queue_seconds:
            return "created"
        if time.monotonic() < self.completed_at:
            return "processing"
        return self.scenario.final_status

    @property
    def outputs_count(self) -> int:
        count = self.scenario.outputs_count
        return int(self.input.get("num_images", 1)) if count is None else count


def envelope(data: Any, code: int = 200, message: str = "success") -> dict[str, Any]:
    return {"code": code, "message": message, "data": data}


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=json.dumps(body), status=status, content_type="application/json", headers=headers)


def input_error(model: str, body: Any) -> str | None:
    """The 400 message WaveSpeed would give for this input, or None when it is valid."""
    if model not in MODELS:
        return f"model {model} not found"
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return "prompt is required"
    if model.endswith("text-to-image"):
        num = body.get("num_images", 1)
        if not isinstance(num, int) or isinstance(num, bool) or not 1 <= num <= 4:
            return "num_images must be between 1 and 4"
    elif model.endswith("/multi"):
        images = body.get("images")
        if not isinstance(images, list) or not 1 <= len(images) <= 5 or not all(isinstance(i, str) for i in images):
            return "images must be a list of 1 to 5 image URLs"
    elif not isinstance(body.get("image"), str):
        return "image is required"
    if body.get("aspect_ratio", "1:1") not in RATIOS:
        return "aspect_ratio is invalid"
    seed = body.get("seed", -1)
    if not isinstance(seed, int) or isinstance(seed, bool) or not -1 <= seed <= 9999999999:
        return "seed must be between -1 and 9999999999"
    guidance = body.get("guidance_scale", 3.5)
    if not isinstance(guidance, int | float) or isinstance(guidance, bool) or not 1.0 <= guidance <= 10.0:
        return "guidance_scale must be between 1.0 and 10.0"
    if body.get("safety_tolerance", "2") not in {"1", "2", "3", "4", "5"}:
        return "safety_tolerance must be one of 1-5"
    return None


class FakeWaveSpeed:
    def __init__(self, *, api_key: str = "ws-test-key-0123456789") -> None:
        self.api_key = api_key
        self.requests = RequestLog()
        self.scenario = Scenario()
        self.scenario_by_prompt: dict[str, Scenario] = {}
        self.predictions: dict[str, FakePrediction] = {}
        self.expired_outputs: set[str] = set()  # prediction ids whose CDN files are gone
        self.rng = random.Random(SEED)
        # What `GET /api/v3/webhook/secret` returns: the HMAC key is what follows `whsec_`.
        self.webhook_secret = "whsec_dGVzdC13ZWJob29rLWtleQ"
        self.balance: float = 100.0  # what `GET /api/v3/balance` answers, in US dollars
        self.balance_responses: list[Scripted] = []  # consumed one per balance read, before the real answer
        self.webhooks_sent: list[tuple[str, int]] = []  # (prediction id, the receiver's answer)
        self.webhook_posts: list[tuple[str, dict[str, str], bytes]] = []  # (url, headers, body) as sent
        self._pushers: set[asyncio.Task[None]] = set()
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._port = 0

    async def start(self) -> None:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_get("/api/v3/predictions/{id}/result", self._result)
        app.router.add_get("/api/v3/balance", self._balance)
        app.router.add_post("/api/v3/{model:.+}", self._submit)
        app.router.add_get("/cdn/predictions/{id}/{name}", self._download)
        self._runner, self._port = await serve_on_loopback(app)

    async def close(self) -> None:
        self._closing.set()  # releases hanging handlers
        for pusher in list(self._pushers):
            pusher.cancel()
        await asyncio.gather(*self._pushers, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    # What the tests read.
    def submits(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST"]

    def accepted_submits(self) -> list[Recorded]:
        """Submits that created a task (and so would be billed)."""
        return [r for r in self.submits() if r.status == 200]

    def result_polls(self, prediction_id: str | None = None) -> list[Recorded]:
        polls = [r for r in self.requests if r.method == "GET" and r.path.endswith("/result")]
        return [r for r in polls if prediction_id is None or f"/{prediction_id}/" in r.path]

    def downloads(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.startswith("/cdn/")]

    def max_in_flight(self) -> int:
        """The most predictions that were ever queued or running at the same moment."""
        spans = [(p.created_at, p.completed_at) for p in self.predictions.values()]
        return max((sum(1 for s, e in spans if s <= start < e) for start, _ in spans), default=0)

    def draw_inference(self, sc: Scenario) -> float:
        """One prediction's inference time from the scenario's distribution (its fixed time if none)."""
        if sc.inference_lognormal is not None:
            median, sigma = sc.inference_lognormal
            return median * math.exp(self.rng.gauss(0.0, sigma))
        if sc.inference_range is not None:
            return self.rng.uniform(*sc.inference_range)
        return sc.inference_seconds

    # Handlers.
    async def _record(self, request: web.Request, body: bytes, status: int) -> None:
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        record = Recorded(request.method, request.path, dict(request.query), dict(request.headers), parsed, body)
        await self.requests.add(dataclasses.replace(record, status=status))

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.api_key}"

    async def _scripted(self, request: web.Request, body: bytes, answer: Scripted, sc: Scenario) -> web.StreamResponse:
        if answer == "hang":
            await self._record(request, body, 0)
            await self._closing.wait()
            return web.Response(status=503)
        if answer == "reset":
            await self._record(request, body, 0)
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)
        if answer == "malformed":
            await self._record(request, body, 200)
            return web.Response(text='{"code": 200, "data": {"id": ', content_type="application/json")
        if answer == "html":
            await self._record(request, body, 502)
            return web.Response(text="<html><body>502 Bad Gateway</body></html>", status=502, content_type="text/html")
        if answer == "envelope-error":
            await self._record(request, body, 200)
            return json_response(envelope(None, 500, "internal server error"))
        assert isinstance(answer, int), answer
        await self._record(request, body, answer)
        headers = {"Retry-After": f"{sc.retry_after:g}"} if answer == 429 else None
        return json_response(envelope(None, answer, f"scripted {answer}"), answer, headers)

    async def _submit(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        prompt = parsed.get("prompt") if isinstance(parsed, dict) else None
        sc = self.scenario_by_prompt.get(prompt, self.scenario) if isinstance(prompt, str) else self.scenario
        await asyncio.sleep(sc.latency_seconds)
        if not self._authorized(request):
            await self._record(request, body, 401)
            return json_response(envelope(None, 401, "Unauthorized: invalid API key"), 401)
        answer = sc.submit_responses.pop(0) if sc.submit_responses else None
        if answer is not None and answer != "accept-then-hang":
            return await self._scripted(request, body, answer, sc)
        model = request.match_info["model"]
        if (problem := input_error(model, parsed)) is not None:
            await self._record(request, body, 400)
            return json_response(envelope(None, 400, problem), 400)
        assert isinstance(parsed, dict)
        if sc.inference_range is not None or sc.inference_lognormal is not None:
            sc = dataclasses.replace(sc, inference_seconds=self.draw_inference(sc))
        prediction = FakePrediction(uuid.uuid4().hex, model, parsed, sc, time.monotonic(), datetime.now(UTC))
        self.predictions[prediction.id] = prediction
        await self._record(request, body, 200)
        if (hook := request.query.get("webhook")) is not None:
            pusher = asyncio.create_task(self._push(prediction, hook))
            self._pushers.add(pusher)
            pusher.add_done_callback(self._pushers.discard)
        if answer == "accept-then-hang":  # the task exists, but the answer never comes
            await self._closing.wait()
            return web.Response(status=503)
        if parsed.get("enable_sync_mode") is True:  # answer when it has finished, or when tired of waiting
            wait = min(sc.sync_wait_seconds, prediction.completed_at - time.monotonic())
            await asyncio.sleep(max(0.0, wait))
            if time.monotonic() < prediction.completed_at:
                data = {**self._data(prediction), "code": 5004, "error": "sync mode wait timed out"}
                return json_response(envelope(data))
        return json_response(envelope(self._data(prediction)))

    async def _result(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        prediction = self.predictions.get(request.match_info["id"])
        sc = prediction.scenario if prediction else self.scenario
        await asyncio.sleep(sc.latency_seconds)
        if not self._authorized(request):
            await self._record(request, body, 401)
            return json_response(envelope(None, 401, "Unauthorized: invalid API key"), 401)
        if sc.result_responses:
            return await self._scripted(request, body, sc.result_responses.pop(0), sc)
        if prediction is None:
            await self._record(request, body, 404)
            return json_response(envelope(None, 404, "prediction not found"), 404)
        await self._record(request, body, 200)
        return json_response(envelope(self._data(prediction)))

    async def _balance(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            await self._record(request, b"", 401)
            return json_response(envelope(None, 401, "Unauthorized: invalid API key"), 401)
        if self.balance_responses:
            return await self._scripted(request, b"", self.balance_responses.pop(0), self.scenario)
        await self._record(request, b"", 200)
        return json_response(envelope({"balance": self.balance}))

    def balance_reads(self) -> list[Recorded]:
        return [r for r in self.requests if r.path == "/api/v3/balance"]

    async def _push(self, prediction: FakePrediction, url: str) -> None:
        """At the end of the prediction, POST it to the submit's `webhook`, signed as WaveSpeed signs."""
        await asyncio.sleep(max(0.0, prediction.completed_at - time.monotonic()))
        body = json.dumps(self._data(prediction)).encode()
        headers = self.webhook_headers(body)
        self.webhook_posts.append((url, headers, body))
        try:
            async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=headers) as answer:
                self.webhooks_sent.append((prediction.id, answer.status))
        except aiohttp.ClientError:
            self.webhooks_sent.append((prediction.id, 0))

    def webhook_headers(
        self, body: bytes, *, webhook_id: str | None = None, timestamp: int | None = None
    ) -> dict[str, str]:
        """The headers WaveSpeed sends with a push: `v3,` + hex HMAC-SHA256 over
        `{webhook-id}.{webhook-timestamp}.{raw body}`, keyed with the secret minus its `whsec_`
        prefix, used as text (not base64-decoded). Written apart from the bot's own verifier."""
        webhook_id = uuid.uuid4().hex if webhook_id is None else webhook_id
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        key = self.webhook_secret.removeprefix("whsec_").encode()
        digest = hmac.new(key, f"{webhook_id}.{stamp}.".encode() + body, hashlib.sha256).hexdigest()
        return {"webhook-id": webhook_id, "webhook-timestamp": stamp, "webhook-signature": f"v3,{digest}"}

    async def _download(self, request: web.Request) -> web.StreamResponse:
        prediction = self.predictions.get(request.match_info["id"])
        name = request.match_info["name"]
        index, _, ext = name.partition(".")
        ok = prediction is not None and prediction.id not in self.expired_outputs and index.isdigit()
        if not ok or prediction is None or not 1 <= int(index) <= prediction.outputs_count:
            await self._record(request, b"", 403)  # what a CDN says about a missing or expired object
            return web.Response(text="<Error>AccessDenied</Error>", status=403, content_type="application/xml")
        sc = prediction.scenario
        if sc.download_responses:
            return await self._scripted(request, b"", sc.download_responses.pop(0), sc)
        data = make_image(*sc.image_size, fmt=ext, noise=sc.image_noise, seed=int(index))
        await self._record(request, b"", 200)
        return web.Response(body=data, content_type=sc.image_content_type or CONTENT_TYPES[ext])

    def _data(self, p: FakePrediction) -> dict[str, Any]:
        status = p.status
        data: dict[str, Any] = {
            "id": p.id,
            "model": p.model,
            "status": status,
            "outputs": [],
            "urls": {"get": f"{self.base_url}/api/v3/predictions/{p.id}/result"},
            "has_nsfw_contents": [],
            "created_at": p.created_wall.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }
        sc = p.scenario
        if status == "completed":
            ext = sc.image_format
            data["outputs"] = [*sc.foreign_outputs] + [
                f"{self.base_url}/cdn/predictions/{p.id}/{n}.{ext}" for n in range(1, p.outputs_count + 1)
            ]
            flags = sc.nsfw_flags if sc.nsfw_flags is not None else [False] * p.outputs_count
            data["has_nsfw_contents"] = flags if sc.nsfw_field == "present" else None
            if sc.nsfw_field == "missing":
                del data["has_nsfw_contents"]
            data["timings"] = {"inference": round(sc.inference_seconds * 1000)}
        elif status not in ("created", "processing"):
            data["error"] = sc.error
            if sc.error_code is not None:
                data["code"] = sc.error_code
            del data["model"]  # fields come and go on failure
        return data
