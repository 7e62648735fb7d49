"""Async WaveSpeed v3 client on one injected aiohttp session.

Billing safety: a submit is retried only when the API provably did not take it (a 429, or a
connection that failed before the request was sent). A timeout or a 5xx after sending may mean the
task exists and is billed, so those are never retried. Result polls are free and are retried with
exponential backoff and jitter, honouring Retry-After, until the job's deadline.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import orjson
from pydantic import SecretStr, ValidationError

from bot.images import sniff_image_type
from bot.metrics import NOOP, Endpoint, Metrics
from bot.wavespeed.errors import (
    AuthenticationError,
    ConnectionFailedError,
    InvalidRequestError,
    JobTimeoutError,
    MalformedResponseError,
    OutputError,
    PredictionFailedError,
    RateLimitedError,
    RequestTimeoutError,
    ServerError,
    WaveSpeedError,
)
from bot.wavespeed.models import Envelope, Prediction
from bot.wavespeed.schedule import PollSchedule

log = logging.getLogger(__name__)

OnUpdate = Callable[[Prediction], Awaitable[None]]
# Poll failures worth waiting out: the prediction is still running on WaveSpeed's side.
TRANSIENT = (RateLimitedError, ServerError, ConnectionFailedError, MalformedResponseError)
# A sync submit's answer when WaveSpeed stopped waiting: the task still runs and can be polled. A
# genuine 5004 failure polls once more and then fails as itself.
SYNC_WAIT_RAN_OUT = 5004


@dataclass(frozen=True)
class Download:
    url: str
    data: bytes
    extension: str


class OutputTooLargeError(OutputError):
    def __init__(self, message: str, *, url: str, prediction_id: str | None = None) -> None:
        super().__init__(message, prediction_id=prediction_id)
        self.url = url


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class WaveSpeedClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        api_key: SecretStr,
        base_url: str,
        request_timeout: float = 30.0,
        poll_interval: float = 0.8,
        first_poll: float | None = None,
        max_backoff: float = 10.0,
        rng: random.Random | None = None,
        webhook_url: str | None = None,
        push_poll_interval: float = 10.0,
        sync_mode: bool = False,
        metrics: Metrics = NOOP,
    ) -> None:
        self._session = session
        self._metrics = metrics
        self._api_key = api_key
        self._base_url = base_url.rstrip("/")
        self._request_timeout = request_timeout
        self._max_backoff = max_backoff
        self._rng = rng or random.Random()
        self.calls = {"submit": 0, "result": 0, "download": 0, "pushed": 0}
        # Push: WaveSpeed posts the finished prediction to `webhook_url`; polls become a slow safety net.
        self.webhook_url = webhook_url
        if webhook_url:  # polls are only a safety net: a steady rhythm, nothing to learn
            self.schedule = PollSchedule(interval=push_poll_interval, first_default=push_poll_interval, learn=False)
        else:  # WaveSpeed's own bot polls every 1.5 s, the SDK every 1 s: spend no more, wait less
            # Until predictions have been seen finishing, the first poll waits 2.5 steps (2 s by
            # default): FLUX.1 Kontext [pro] takes longer than that, so earlier polls would only cost
            # requests. After that the schedule places the polls where predictions finish.
            first = first_poll if first_poll is not None else poll_interval * 2.5
            self.schedule = PollSchedule(interval=poll_interval, first_default=first, rng=self._rng)
        # When each prediction's submit was answered (loop time): its plan counts from there, not
        # from whenever its wait begins (a busy database can hold that back).
        self._submitted_at: dict[str, float] = {}
        # Sync: the submit itself waits for the finished prediction (`enable_sync_mode`), so there
        # is nothing to poll; the cost is that the prediction id is unknown until it has finished.
        self.sync_mode = sync_mode
        self._waiters: dict[str, asyncio.Future[Prediction]] = {}
        self._early: dict[str, Prediction] = {}  # pushed before anyone waited

    # -- one request ------------------------------------------------------------------------------
    async def _request(
        self, method: str, path: str, *, payload: Any = None, seconds: float, params: dict[str, str] | None = None
    ) -> Any:
        headers = {"Authorization": f"Bearer {self._api_key.get_secret_value()}"}
        client_timeout = aiohttp.ClientTimeout(total=seconds, connect=min(seconds, 10.0))
        endpoint = _endpoint(path)
        try:
            async with self._session.request(
                method, self._base_url + path, json=payload, headers=headers, timeout=client_timeout, params=params
            ) as response:
                status, body = response.status, await response.read()
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
        except (aiohttp.ConnectionTimeoutError, aiohttp.ClientConnectorError) as error:
            self._metrics.wavespeed_request(endpoint, "error")
            raise ConnectionFailedError(
                f"could not connect to WaveSpeed ({type(error).__name__})", sent=False
            ) from None
        except TimeoutError:
            self._metrics.wavespeed_request(endpoint, "timeout")
            raise RequestTimeoutError(f"WaveSpeed did not answer within {seconds:.0f} s", sent=True) from None
        except aiohttp.ClientError as error:
            self._metrics.wavespeed_request(endpoint, "error")
            raise ConnectionFailedError(f"connection to WaveSpeed broke ({type(error).__name__})", sent=True) from None
        self._metrics.wavespeed_request(endpoint, status)
        return self._unwrap(status, body, retry_after)

    def _unwrap(self, status: int, body: bytes, retry_after: float | None) -> Any:
        envelope: Envelope | None = None
        try:
            envelope = Envelope.model_validate(orjson.loads(body))  # every poll: the faster decoder
        except (ValueError, ValidationError):
            if status == 200:
                raise MalformedResponseError("WaveSpeed sent a body that is not its JSON envelope") from None
        code = status if status != 200 or envelope is None else envelope.code
        detail = (envelope.message if envelope else "")[:200] or f"HTTP {status}"
        if code in (401, 403):
            raise AuthenticationError(f"WaveSpeed refused the API key ({code}: {detail})")
        if code == 429:
            raise RateLimitedError(f"WaveSpeed rate limit ({detail})", retry_after=retry_after)
        if code >= 500:
            raise ServerError(f"WaveSpeed server error ({code}: {detail})", status=code)
        if code != 200:
            raise InvalidRequestError(
                f"WaveSpeed refused the request ({code}: {detail})", enveloped=envelope is not None
            )
        assert envelope is not None
        return envelope.data

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after + self._rng.uniform(0, 0.25)
        return float(min(self._max_backoff, 0.5 * 2**attempt) * self._rng.uniform(0.5, 1.0))

    # -- the API ----------------------------------------------------------------------------------
    async def submit(
        self, model: str, payload: Mapping[str, Any], *, deadline: float, retry_rate_limits: bool = True
    ) -> Prediction:
        """POST the task; return the prediction as WaveSpeed answered (finished, in sync mode, unless
        WaveSpeed's own wait ran out). Raises a WaveSpeedError. With `retry_rate_limits` off, a 429
        is raised at once so that a caller with a queue can hold every submission back."""
        loop = asyncio.get_running_loop()
        body = {**payload, "enable_sync_mode": True} if self.sync_mode else dict(payload)
        attempt = 0
        while True:
            self.calls["submit"] += 1
            try:
                data = await self._request(
                    "POST",
                    f"/api/v3/{model}",
                    payload=body,
                    # a sync submit lasts as long as the generation: only the job's deadline bounds it
                    seconds=self._within(deadline, whole_job=self.sync_mode),
                    params={"webhook": self.webhook_url} if self.webhook_url else None,
                )
                prediction = self._prediction(data)
                self._remember_submit(prediction.id, loop.time())
                return prediction
            except RateLimitedError as error:  # the API did not take it
                delay = self._backoff(attempt, error.retry_after)
                if not retry_rate_limits or loop.time() + delay > deadline:
                    raise
            except ConnectionFailedError as error:
                if error.sent:  # it may have arrived: never send it twice
                    raise
                delay = self._backoff(attempt, None)
                if loop.time() + delay > deadline:
                    raise
            attempt += 1
            log.info("submit not accepted, retrying in %.1f s", delay)
            await asyncio.sleep(delay)

    def _within(self, deadline: float | None, *, whole_job: bool = False) -> float:
        """The request timeout, cut short so that no request outlives the job's deadline; with
        `whole_job`, the rest of the job's time (a request that lasts the generation)."""
        if deadline is None:
            return self._request_timeout
        remaining = deadline - asyncio.get_running_loop().time()
        return max(0.1, remaining if whole_job else min(self._request_timeout, remaining))

    async def result(self, prediction_id: str, *, deadline: float | None = None) -> Prediction:
        """One GET of the prediction's current state."""
        self.calls["result"] += 1
        path = f"/api/v3/predictions/{prediction_id}/result"
        data = await self._request("GET", path, seconds=self._within(deadline))
        prediction = self._prediction(data)
        if prediction.id != prediction_id:
            raise MalformedResponseError("WaveSpeed answered about a different prediction", prediction_id=prediction_id)
        return prediction

    async def balance(self, *, seconds: float | None = None) -> float:
        """The account's balance in US dollars (`GET /api/v3/balance`). Raises a WaveSpeedError."""
        data = await self._request("GET", "/api/v3/balance", seconds=seconds or self._request_timeout)
        value = data.get("balance") if isinstance(data, dict) else None
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise MalformedResponseError("WaveSpeed's balance answer has no balance in it")
        return float(value)

    def push(self, prediction: Prediction) -> None:
        """A prediction WaveSpeed posted to the webhook (signature already checked)."""
        if not prediction.is_final:
            return
        self.calls["pushed"] += 1
        waiter = self._waiters.get(prediction.id)
        if waiter is not None and not waiter.done():
            waiter.set_result(prediction)
        elif len(self._early) < 10_000:
            self._early[prediction.id] = prediction

    def expect(self, prediction_id: str) -> None:
        """From now on a push of this prediction is kept for `wait`, even before it starts."""
        if prediction_id not in self._waiters:
            self._waiters[prediction_id] = asyncio.get_running_loop().create_future()
        if (early := self._early.pop(prediction_id, None)) is not None and not self._waiters[prediction_id].done():
            self._waiters[prediction_id].set_result(early)

    def waiting_for(self, prediction_id: str) -> bool:
        return prediction_id in self._waiters

    async def wait(
        self, prediction_id: str, *, deadline: float, on_update: OnUpdate | None = None, running_for: float = 0.0
    ) -> Prediction:
        """Until the prediction is final (pushed, or seen by a poll) or the deadline passes; reports
        each status change. `running_for`: how long ago it was submitted (a job picked up after a
        restart or from another process): the polls it has missed are due at once."""
        submitted = self._submitted_at.pop(prediction_id, None)
        now = asyncio.get_running_loop().time()
        started = now - running_for if running_for > 0 or submitted is None else submitted
        self.expect(prediction_id)
        waiter = self._waiters[prediction_id]
        try:
            return await self._wait(prediction_id, waiter, started, deadline, on_update, resumed=running_for > 0)
        finally:
            self._waiters.pop(prediction_id, None)

    def _remember_submit(self, prediction_id: str, at: float) -> None:
        if len(self._submitted_at) >= 10_000:  # submits never waited for (their job failed in between)
            del self._submitted_at[next(iter(self._submitted_at))]
        self._submitted_at[prediction_id] = at

    async def _wait(
        self,
        prediction_id: str,
        waiter: asyncio.Future[Prediction],
        started: float,
        deadline: float,
        on_update: OnUpdate | None,
        *,
        resumed: bool,
    ) -> Prediction:
        loop = asyncio.get_running_loop()
        # Fixed for this prediction (what finishes meanwhile teaches later ones), at a phase of its own.
        plan = self.schedule.plan(in_flight=len(self._waiters)).shifted(self._rng.random())
        last_status: str | None = None
        failures = 0
        last_poll: float | None = None  # seconds after the submit at which the last poll was sent
        running_at: float | None = None  # ... the last poll that saw the prediction running was sent
        delay = plan.next_poll(loop.time() - started, None) - (loop.time() - started)
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise JobTimeoutError("the prediction did not finish before the deadline", prediction_id=prediction_id)
            done, _ = await asyncio.wait({waiter}, timeout=min(delay, remaining))
            sent = None
            if done:
                prediction = waiter.result()
                answered = loop.time() - started
            else:
                sent = last_poll = loop.time() - started
                try:
                    prediction = await self.result(prediction_id, deadline=deadline)
                    answered = loop.time() - started
                except TRANSIENT as error:
                    retry_after = error.retry_after if isinstance(error, RateLimitedError) else None
                    delay = max(plan.floor, self._backoff(failures, retry_after))
                    failures += 1
                    log.warning("poll of %s failed (%s); next try in %.1f s", prediction_id, error, delay)
                    continue
                except WaveSpeedError as error:
                    error.prediction_id = prediction_id
                    raise
            failures = 0
            if prediction.status != last_status:
                last_status = prediction.status
                if on_update is not None:
                    await on_update(prediction)
            if not prediction.is_final:
                running_at = sent if sent is not None else running_at
                now = loop.time() - started
                delay = plan.next_poll(now, last_poll) - now
                continue
            # What a job picked up after a restart saw first says nothing about when it finished.
            if running_at is not None or not resumed:
                self.schedule.observe(running_at or 0.0, answered)
            return self.finished(prediction)

    def settled_on_submit(self, prediction: Prediction) -> Prediction | None:
        """The final prediction a sync submit brought back (for `finished`); None when it must still
        be waited for (async mode, or WaveSpeed's own wait ran out: 5004, the task runs on)."""
        if not self.sync_mode or not prediction.is_final or prediction.code == SYNC_WAIT_RAN_OUT:
            return None
        return prediction

    @staticmethod
    def finished(prediction: Prediction) -> Prediction:
        """A final prediction, checked: completed with outputs, or raised as the failure it is."""
        if prediction.is_completed:
            if not prediction.output_urls:
                raise OutputError("the prediction completed with no outputs", prediction_id=prediction.id)
            return prediction
        raise PredictionFailedError(
            prediction.error or "no reason given",
            prediction_id=prediction.id,
            status=prediction.status,
            code=prediction.code,
        )

    async def download(self, url: str, *, max_bytes: int, attempts: int = 3) -> Download:
        """Fetch one output (no API key: outputs live on a CDN), refusing more than `max_bytes`."""
        for attempt in range(attempts):
            self.calls["download"] += 1
            try:
                return await self._download_once(url, max_bytes)
            except (ConnectionFailedError, ServerError) as error:
                if attempt == attempts - 1:
                    raise OutputError(f"could not download an output ({error})") from None
                await asyncio.sleep(self._backoff(attempt, None))
        raise AssertionError("unreachable")

    async def _download_once(self, url: str, max_bytes: int) -> Download:
        timeout = aiohttp.ClientTimeout(total=self._request_timeout * 2, connect=10.0)
        try:
            async with self._session.get(url, timeout=timeout) as response:
                self._metrics.wavespeed_request("download", response.status)
                if response.status >= 500:
                    raise ServerError(f"output download failed (HTTP {response.status})", status=response.status)
                if response.status != 200:
                    raise OutputError(f"output download failed (HTTP {response.status})")
                if (response.content_length or 0) > max_bytes:
                    raise OutputTooLargeError("the output is larger than the download cap", url=url)
                data = bytearray()
                async for chunk in response.content.iter_chunked(256 * 1024):
                    data += chunk
                    if len(data) > max_bytes:
                        raise OutputTooLargeError("the output is larger than the download cap", url=url)
                content_type = response.content_type
        except TimeoutError:
            self._metrics.wavespeed_request("download", "timeout")
            raise ConnectionFailedError("output download timed out", sent=True) from None
        except aiohttp.ClientError as error:
            self._metrics.wavespeed_request("download", "error")
            raise ConnectionFailedError(f"output download failed ({type(error).__name__})", sent=True) from None
        extension = sniff_image_type(bytes(data[:16])) or _extension_from_content_type(content_type)
        if extension is None:
            raise OutputError(f"an output is not an image ({content_type})")
        return Download(url=url, data=bytes(data), extension=extension)

    @staticmethod
    def _prediction(data: Any) -> Prediction:
        try:
            return Prediction.model_validate(data)
        except ValidationError:
            raise MalformedResponseError("WaveSpeed's answer has no valid prediction in it") from None


def _endpoint(path: str) -> Endpoint:
    """Which endpoint a request path is, for the metrics (never the path itself: it holds ids)."""
    if path.startswith("/api/v3/predictions/"):
        return "result"
    if path == "/api/v3/balance":
        return "balance"
    return "submit"


def _extension_from_content_type(content_type: str) -> str | None:
    return {"image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp", "image/gif": "gif"}.get(content_type)
