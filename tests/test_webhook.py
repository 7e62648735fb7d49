"""Push mode: WaveSpeed's webhook signature, typed refusals, replays, and a receiver that idle or
slow clients cannot wear out. Every socket here is on 127.0.0.1."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import socket
import time
from asyncio.trsock import TransportSocket
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from bot.httpserver import ACCEPT_FAILED, AcceptErrorFilter, quiet_accept_errors
from bot.wavespeed.models import Prediction
from bot.wavespeed.webhook import (
    PATH,
    InvalidSignatureError,
    InvalidTimestampError,
    MissingHeaderError,
    ReplayedWebhookError,
    WebhookServer,
    WebhookVerifier,
    sign,
    verify,
)
from tests.botprocess import free_port
from tests.fakes.wavespeed import FakeWaveSpeed

# A known-answer vector, computed with openssl, not with our code. The secret's tail is valid
# base64 on purpose, so that decoding it (the wrong rule) would give another key:
#   printf '%s' 'msg_2mR6Vq.1700000000.{"id":"x","status":"completed"}' \
#     | openssl dgst -sha256 -hmac 'c2lnbmluZy1rZXktZm9yLXRlc3Rz'            -> RIGHT (key = secret minus whsec_)
#   same with -hmac 'whsec_c2lnbmluZy1rZXktZm9yLXRlc3Rz'                    -> WHOLE (the old bug)
#   same with -hmac 'signing-key-for-tests' (the base64-decoded tail)          -> DECODED
SECRET = "whsec_c2lnbmluZy1rZXktZm9yLXRlc3Rz"
KAT_ID, KAT_TS, KAT_BODY = "msg_2mR6Vq", 1_700_000_000, b'{"id":"x","status":"completed"}'
RIGHT = "a9333dab83ca3b91e976a618e82cdf86e966fc67d591628f5d384e3823f1a25d"
WHOLE = "2cb3e0e054e7adf4baa356ffb47b43c454dc019498408ec0d2f05be84b564a96"
DECODED = "2234a2560867ed947b63deaad46901ee89fcdd2cff5bba1455658943581ff544"
SLACK = 1.5  # seconds: generous for a loaded 2-core machine


def kat_headers(signature: str, **changes: str) -> dict[str, str]:
    headers = {"webhook-id": KAT_ID, "webhook-timestamp": str(KAT_TS), "webhook-signature": signature}
    return {**headers, **changes}


def signed(body: bytes, **kwargs: Any) -> dict[str, str]:
    """Headers as the fake WaveSpeed signs them (its own code, checked against the vector below)."""
    fake = FakeWaveSpeed()
    fake.webhook_secret = SECRET
    return fake.webhook_headers(body, **kwargs)


# -- the verifier ---------------------------------------------------------------------------------


@pytest.mark.parametrize("configured", [SECRET, SECRET.removeprefix("whsec_")])
def test_the_known_answer_vector_is_accepted_with_or_without_the_prefix(configured):
    assert verify(configured, kat_headers(f"v3,{RIGHT}"), KAT_BODY, now=KAT_TS) == (KAT_ID, KAT_TS)
    assert sign(configured, KAT_ID, str(KAT_TS), KAT_BODY) == f"v3,{RIGHT}"
    for wrong in (WHOLE, DECODED):  # keyed with the whole secret, or with the tail base64-decoded
        with pytest.raises(InvalidSignatureError):
            verify(configured, kat_headers(f"v3,{wrong}"), KAT_BODY, now=KAT_TS)


def test_the_fake_signs_as_wavespeed_documents():
    assert FakeWaveSpeed().webhook_secret.startswith("whsec_")
    headers = signed(KAT_BODY, webhook_id=KAT_ID, timestamp=KAT_TS)
    assert headers == kat_headers(f"v3,{RIGHT}")


@pytest.mark.parametrize("header", [f"v3,{WHOLE} v3,{RIGHT}", f"v3,{RIGHT}  v3,{DECODED}", f"v1,abc v3,{RIGHT}"])
def test_any_one_of_several_signatures_may_match(header):
    assert verify(SECRET, kat_headers(header), KAT_BODY, now=KAT_TS)[0] == KAT_ID


@pytest.mark.parametrize(
    ("changes", "now", "refusal"),
    [
        ({"webhook-id": ""}, KAT_TS, MissingHeaderError),
        ({"webhook-signature": ""}, KAT_TS, MissingHeaderError),
        ({"webhook-timestamp": ""}, KAT_TS, MissingHeaderError),
        ({"webhook-signature": f"v1,{RIGHT}"}, KAT_TS, InvalidSignatureError),  # not v3
        ({"webhook-signature": "v3,é"}, KAT_TS, InvalidSignatureError),  # not even ASCII
        ({"webhook-id": "msg_other"}, KAT_TS, InvalidSignatureError),
        ({}, KAT_TS + 301, InvalidTimestampError),  # too old
        ({}, KAT_TS - 301, InvalidTimestampError),  # too far ahead
    ],
)
def test_refusals_are_typed(changes, now, refusal):
    with pytest.raises(refusal):
        verify(SECRET, kat_headers(f"v3,{RIGHT}", **changes), KAT_BODY, now=now)
    verify(SECRET, kat_headers(f"v3,{RIGHT}"), KAT_BODY, now=KAT_TS + 300)  # the edge is still in


@pytest.mark.parametrize("stamp", ["nan", "inf", "-inf", "1e9", "-5", "1700000000.0", " 1700000000", "１７００"])
def test_only_whole_seconds_are_timestamps(stamp):
    """Correctly signed, so only the timestamp can be the reason (today `nan` passes: nan > 300 is False)."""
    headers = {"webhook-id": "w", "webhook-timestamp": stamp}
    headers["webhook-signature"] = sign(SECRET, "w", stamp, KAT_BODY)
    with pytest.raises(InvalidTimestampError):
        verify(SECRET, headers, KAT_BODY, now=KAT_TS)


def test_accepted_ids_are_remembered_for_the_window_and_no_longer():
    verifier = WebhookVerifier(SECRET, max_remembered=3)
    now = time.time()
    first = signed(b"{}", webhook_id="w1", timestamp=int(now))
    with pytest.raises(InvalidSignatureError):  # a forgery does not burn the id
        verifier.verify({**first, "webhook-signature": "v3,00"}, b"{}", now=now)
    assert verifier.verify(first, b"{}", now=now) == "w1"
    with pytest.raises(ReplayedWebhookError):
        verifier.verify(first, b"{}", now=now + 299)
    for n in range(2, 7):  # bounded: never more than 3 ids held
        verifier.verify(signed(b"{}", webhook_id=f"w{n}", timestamp=int(now)), b"{}", now=now + 1)
        assert verifier.remembered <= 3
    later = signed(b"{}", webhook_id="late", timestamp=int(now) + 400)
    verifier.verify(later, b"{}", now=now + 400)
    assert verifier.remembered == 1  # the expired ones went
    with pytest.raises(InvalidTimestampError):  # and w1 is refused by its age anyway
        verifier.verify(first, b"{}", now=now + 400)


# -- the receiver on a real socket ----------------------------------------------------------------


@dataclass
class Receiver:
    server: WebhookServer
    delivered: list[Prediction] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.http.port}{PATH}"


@pytest.fixture
async def receiver():
    started: list[Receiver] = []

    async def start(**limits: Any) -> Receiver:
        delivered: list[Prediction] = []

        async def deliver(prediction: Prediction) -> None:
            delivered.append(prediction)

        server = WebhookServer(deliver, SECRET, host="127.0.0.1", port=0, **limits)
        await server.start()
        started.append(Receiver(server, delivered))
        return started[-1]

    yield start
    for one in started:
        await one.server.close()


def prediction_body(prediction_id: str = "p1") -> bytes:
    return json.dumps({"id": prediction_id, "status": "completed", "outputs": ["https://cdn.example/1.png"]}).encode()


async def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=headers) as answer:
        return answer.status


async def test_refusals_are_answered_and_logged_with_their_reason_never_the_secret(receiver, caplog):
    caplog.set_level(logging.DEBUG)
    r = await receiver()
    body = prediction_body()
    good = signed(body, webhook_id="wh_good")
    stale = signed(body, webhook_id="wh_stale", timestamp=int(time.time()) - 301)
    calls = [
        (good, 200, None),
        (good, 409, "replayed"),
        ({**good, "webhook-id": "wh_forged"}, 401, "bad signature"),
        (stale, 401, "stale or malformed timestamp"),
        ({k: v for k, v in good.items() if k != "webhook-timestamp"}, 400, "missing header"),
    ]
    for headers, status, reason in calls:
        caplog.clear()
        assert await post(r.url, body, headers) == status
        warnings = [rec.getMessage() for rec in caplog.records if rec.levelno >= logging.WARNING]
        if reason is None:
            assert warnings == []
            continue
        [line] = warnings
        assert reason in line and repr(headers["webhook-id"]) in line
        text = caplog.text
        assert SECRET.removeprefix("whsec_") not in text and good["webhook-signature"][3:] not in text
    assert [p.id for p in r.delivered] == ["p1"]  # the replay was not handed on


async def test_the_body_is_capped_at_1_mib(receiver):
    r = await receiver()
    body = b" " * (1024 * 1024 + 1)
    assert await post(r.url, body, signed(body)) == 413
    assert r.delivered == []


@pytest.mark.parametrize("configured", [FakeWaveSpeed().webhook_secret, FakeWaveSpeed().webhook_secret[6:]])
async def test_a_pushed_result_is_delivered_without_a_single_poll(start_bot, wavespeed, configured):
    port = free_port()
    bot = await start_bot(
        webhook_url=f"http://127.0.0.1:{port}",
        http_host="127.0.0.1",
        http_port=port,
        wavespeed_webhook_secret=configured,
    )
    final = await bot.final_edit(await bot.imagine(prompt="pushed"))

    [submit] = wavespeed.accepted_submits()
    [prediction_id] = wavespeed.predictions
    assert submit.query["webhook"] == f"http://127.0.0.1:{port}{PATH}"
    assert wavespeed.webhooks_sent == [(prediction_id, 200)]
    assert final.files and not wavespeed.result_polls(prediction_id)

    [(url, headers, body)] = wavespeed.webhook_posts
    assert await post(url, body, headers) == 409  # the same call again is a replay
    forged = b'{"id": "x", "status": "completed", "outputs": ["http://evil/1.png"]}'
    assert await post(url, forged, {**headers, "webhook-id": "1", "webhook-signature": "v3,00"}) == 401


# -- connection limits, measured ------------------------------------------------------------------


async def eof_at(reader: asyncio.StreamReader, timeout: float) -> float:
    """When the server closed the connection (EOF or reset); fails if it is still open at `timeout`."""
    try:
        while await asyncio.wait_for(reader.read(65536), timeout):
            pass
    except ConnectionResetError:
        pass
    return asyncio.get_running_loop().time()


async def open_idle(port: int, count: int, timeout: float) -> tuple[list[float], list[asyncio.Task[float]], list[Any]]:
    """`count` connections opened one after the other; when each began (before the server can have
    accepted it, so a lifetime measured from it is never short) and each one's EOF watcher."""
    opened, watchers, writers = [], [], []
    for _ in range(count):
        opened.append(asyncio.get_running_loop().time())
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        watchers.append(asyncio.create_task(eof_at(reader, timeout)))
        writers.append(writer)
    return opened, watchers, writers


def close_all(writers: list[Any]) -> None:
    for writer in writers:
        writer.transport.abort()


async def test_idle_connections_are_capped_and_closed_at_their_deadline(receiver):
    deadline, cap = 0.5, 32
    r = await receiver(request_timeout=deadline, keepalive_timeout=30.0, max_connections=cap)
    opened, watchers, writers = await open_idle(r.server.http.port, 200, deadline + SLACK + 5)
    try:
        lifetimes = [closed - start for start, closed in zip(opened, await asyncio.gather(*watchers), strict=True)]
    finally:
        close_all(writers)
    http = r.server.http
    assert http.peak <= cap
    assert http.counts["evicted"] + http.counts["expired"] == 200 and http.counts["refused"] == 0
    assert http.counts["expired"] >= cap  # the last 32 were never evicted: their deadline closed them
    survivors = sorted(lifetimes)[-http.counts["expired"] :]
    assert deadline <= min(survivors) and max(lifetimes) <= deadline + SLACK
    print(f"\n{http.counts} survivors closed after {min(survivors):.3f}..{max(survivors):.3f} s")


async def test_a_push_gets_through_while_200_idle_sockets_are_held(receiver):
    cap = 32
    r = await receiver(request_timeout=60.0, max_connections=cap)  # no deadline will help here
    _, watchers, writers = await open_idle(r.server.http.port, 200, 10.0)
    try:
        await asyncio.gather(*watchers[: 200 - cap])  # the oldest were dropped as newer ones came
        assert r.server.http.connections == cap and not any(w.done() for w in watchers[-cap:])
        body = prediction_body("under-siege")
        started = time.monotonic()
        assert await post(r.url, body, signed(body)) == 200
        elapsed = time.monotonic() - started
    finally:
        close_all(writers)
    assert [p.id for p in r.delivered] == ["under-siege"] and elapsed < SLACK
    assert r.server.http.counts["evicted"] == 200 - cap + 1
    print(f"\npush answered in {elapsed * 1000:.1f} ms with 200 idle sockets held")


@pytest.mark.parametrize("slow_part", ["headers", "body"])
async def test_a_slowloris_is_cut_off_at_the_deadline(receiver, caplog, slow_part):
    deadline = 0.5
    r = await receiver(request_timeout=deadline, keepalive_timeout=30.0)
    head = f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n".encode()
    fast, slow = (b"", head + b"X-Slow: " + b"a" * 1000) if slow_part == "headers" else (head + b"\r\n", b"{" * 1000)
    started = asyncio.get_running_loop().time()  # before the server can have accepted it
    reader, writer = await asyncio.open_connection("127.0.0.1", r.server.http.port)

    async def trickle() -> None:  # one byte every 50 ms: the attacker's pace
        writer.write(fast)
        for byte in slow:
            writer.write(bytes([byte]))
            await asyncio.sleep(0.05)

    sender = asyncio.create_task(trickle())
    try:
        elapsed = await eof_at(reader, deadline + SLACK + 5) - started
    finally:
        sender.cancel()
        writer.transport.abort()
    assert deadline <= elapsed <= deadline + SLACK
    assert r.server.http.counts["expired"] == 1 and r.delivered == []
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    print(f"\nslow {slow_part} cut off after {elapsed:.3f} s")


async def test_an_idle_kept_alive_connection_is_closed_after_keepalive_timeout(receiver):
    keepalive = 0.3
    r = await receiver(request_timeout=5.0, keepalive_timeout=keepalive)
    reader, writer = await asyncio.open_connection("127.0.0.1", r.server.http.port)
    try:
        writer.write(b"GET /nowhere HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert (await reader.readline()).startswith(b"HTTP/1.1 404")
        await reader.readuntil(b"\r\n\r\n")
        answered = asyncio.get_running_loop().time()
        elapsed = await eof_at(reader, keepalive + SLACK + 5) - answered
    finally:
        writer.transport.abort()
    assert keepalive - 0.05 <= elapsed <= keepalive + SLACK
    print(f"\nidle keep-alive closed after {elapsed:.3f} s")


async def test_accept_failures_are_reported_at_most_once_a_minute(caplog):
    caplog.set_level(logging.DEBUG)
    loop = asyncio.get_running_loop()
    now = [1000.0]
    passed_on: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(AcceptErrorFilter(lambda _, c: passed_on.append(c), clock=lambda: now[0]))
    try:
        with socket.socket() as sock:  # the context asyncio's selector loop passes (selector_events.py)
            context = {
                "message": ACCEPT_FAILED,
                "exception": OSError(errno.EMFILE, "Too many open files"),
                "socket": TransportSocket(sock),
            }
            for _ in range(600):  # ten a second for a minute, less a tick
                loop.call_exception_handler(context)
                now[0] += 0.0999
            assert len([r for r in caplog.records if "cannot accept" in r.getMessage()]) == 1
            now[0] += 1.0
            loop.call_exception_handler(context)
        lines = [r.getMessage() for r in caplog.records if "cannot accept" in r.getMessage()]
        assert len(lines) == 2 and "Too many open files" in lines[0] and "(600 failed accepts" in lines[1]
        loop.call_exception_handler({"message": "something else"})
        assert passed_on == [{"message": "something else"}]
    finally:
        loop.set_exception_handler(previous)
    quiet = quiet_accept_errors(loop)
    try:
        assert loop.get_exception_handler() is quiet
    finally:
        loop.set_exception_handler(previous)


async def test_closing_the_server_closes_every_connection(receiver):
    r = await receiver(request_timeout=60.0)
    _, watchers, writers = await open_idle(r.server.http.port, 10, 10.0)
    await r.server.close()
    try:
        await asyncio.gather(*watchers)
    finally:
        close_all(writers)
    assert r.server.http.connections == 0
