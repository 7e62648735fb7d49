"""An aiohttp server that strangers on the internet cannot wear out.

aiohttp bounds neither the time a client may take to send a request's headers and body nor the
number of connections it holds, and every connection costs a file descriptor. A few hundred idle
or trickling sockets (slowloris) then exhaust the descriptors: `accept()` fails, asyncio logs a
traceback per attempt, and WaveSpeed's genuine pushes are refused. `GuardedHTTPServer` keeps
aiohttp for routing but listens itself (`loop.create_server`) with a forwarding protocol around
aiohttp's, so that every connection is counted and timed:

- `request_timeout` (10 s): from accept, or from the end of the previous request on a kept-alive
  connection, until the whole request, headers and body, has been read. Past it the connection
  is closed. A genuine push is a small JSON body sent in milliseconds.
- `keepalive_timeout` (5 s): how long aiohttp keeps an idle connection after a response.
- `max_connections` (256): at the cap a newcomer is let in and the oldest connection that is
  still waiting for a request is dropped, so a genuine push gets through even while idle
  sockets are held open against us; only when every connection is inside a handler is the
  newcomer dropped instead (handlers here answer in milliseconds).
- `backlog` (1024): connections the kernel queues while the loop is busy.
- `shutdown_timeout` (5 s): how long `close()` lets running handlers finish.

The body size cap is the Application's own `client_max_size`. Handlers are not timed: they must
answer quickly. The server is generic (any Application) so health and metrics can share it.

`quiet_accept_errors` is the other half: if descriptors run out anyway (the process has other
sockets), asyncio reports every failed `accept()`; the filter keeps one line a minute of them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiohttp import web

log = logging.getLogger(__name__)

ACCEPT_FAILED = "socket.accept() out of system resource"  # asyncio's message (selector_events.py)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Connection(asyncio.Protocol):
    """Forwards every event to aiohttp's protocol, and carries the connection's deadline."""

    def __init__(self, guard: GuardedHTTPServer, inner: asyncio.Protocol) -> None:
        self._guard, self._inner = guard, inner
        self.transport: asyncio.Transport | None = None
        self.busy = False  # inside a handler: the request has been read
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._inner.connection_made(transport)
        self._guard._admit(self)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.disarm()
        self._guard._forget(self)
        self._inner.connection_lost(exc)

    def arm(self, seconds: float) -> None:
        """Close the connection unless a whole request has been read within `seconds`."""
        self.disarm()
        self._timer = asyncio.get_running_loop().call_later(seconds, self._expire)

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        self._guard.counts["expired"] += 1
        self.drop()

    def drop(self) -> None:
        """Close now: with a FIN when nothing is waiting to be sent, else with a reset."""
        self.disarm()
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if transport.get_write_buffer_size():
            transport.abort()
        else:
            transport.close()


class GuardedHTTPServer:
    """Serves an aiohttp Application (not yet started) with bounded connections; see the module doc."""

    def __init__(
        self,
        app: web.Application,
        *,
        host: str,
        port: int,
        request_timeout: float = 10.0,
        keepalive_timeout: float = 5.0,
        max_connections: int = 256,
        backlog: int = 1024,
        shutdown_timeout: float = 5.0,
    ) -> None:
        if max_connections < 1 or request_timeout <= 0:
            raise ValueError("max_connections and request_timeout must be positive")
        self._app, self._host, self._port = app, host, port
        self.request_timeout, self.max_connections, self._backlog = request_timeout, max_connections, backlog
        app.middlewares.insert(0, self._pace)  # outermost: it reads the body before anyone else
        self._runner = web.AppRunner(
            app, access_log=None, keepalive_timeout=keepalive_timeout, shutdown_timeout=shutdown_timeout
        )
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.BaseTransport, _Connection] = {}  # oldest first
        self.counts: Counter[str] = Counter()  # accepted, evicted, expired, refused
        self.peak = 0  # the most connections held at once
        self._warned_at = -1e9

    @property
    def port(self) -> int:
        """The bound port (useful with port=0)."""
        assert self._server is not None and self._server.sockets, "not started"
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def connections(self) -> int:
        return len(self._connections)

    async def start(self) -> None:
        await self._runner.setup()
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self, server()), self._host, self._port, backlog=self._backlog, reuse_address=True
        )

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()  # stop accepting
        for connection in list(self._connections.values()):
            connection.disarm()
        await self._runner.cleanup()  # closes idle connections, lets running handlers finish
        for connection in list(self._connections.values()):
            if connection.transport is not None:
                connection.transport.abort()
        await self._server.wait_closed()
        self._server = None

    def _admit(self, connection: _Connection) -> None:
        assert connection.transport is not None
        self.counts["accepted"] += 1
        if len(self._connections) >= self.max_connections:
            victim = next((c for c in self._connections.values() if not c.busy), None)
            self._warn_at_cap()
            if victim is None:
                self.counts["refused"] += 1
                connection.drop()
                return
            self.counts["evicted"] += 1
            self._forget(victim)
            victim.drop()
        self._connections[connection.transport] = connection
        self.peak = max(self.peak, len(self._connections))
        connection.arm(self.request_timeout)

    def _forget(self, connection: _Connection) -> None:
        if connection.transport is not None and self._connections.get(connection.transport) is connection:
            del self._connections[connection.transport]

    def _warn_at_cap(self) -> None:
        now = time.monotonic()
        if now - self._warned_at >= 60.0:
            self._warned_at = now
            log.warning(
                "%d connections held on the HTTP server (the cap): dropping the oldest idle ones (%d so far)",
                self.max_connections,
                self.counts["evicted"] + 1,
            )

    @web.middleware
    async def _pace(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Read the whole body under the connection's deadline, then lift it for the handler and
        set it again for the next request on the same connection."""
        connection = self._connections.get(request.transport) if request.transport is not None else None
        try:
            await request.read()  # cached for the handler; over client_max_size: 413
        except ConnectionResetError:  # closed at the deadline (or the client left): nobody to answer
            return web.Response(status=408, text="request timeout")
        if connection is None:
            return await handler(request)
        connection.busy = True
        connection.disarm()
        try:
            return await handler(request)
        finally:
            connection.busy = False
            if connection.transport is not None and not connection.transport.is_closing():
                connection.arm(self.request_timeout)


class AcceptErrorFilter:
    """A loop exception handler: at most one line per `interval` about failed accepts (with a count),
    everything else to the handler that was there before (or asyncio's default)."""

    def __init__(
        self,
        previous: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None,
        *,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._previous, self._interval, self._clock = previous, interval, clock
        self._last: float | None = None
        self.failures = 0  # since the last line
        self.total = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != ACCEPT_FAILED:
            if self._previous is not None:
                self._previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        self.failures += 1
        self.total += 1
        now = self._clock()
        if self._last is not None and now - self._last < self._interval:
            return
        self._last = now
        log.warning(
            "cannot accept connections: %s (%d failed accepts since the last report); asyncio retries every second",
            context.get("exception"),
            self.failures,
        )
        self.failures = 0


def quiet_accept_errors(loop: asyncio.AbstractEventLoop, *, interval: float = 60.0) -> AcceptErrorFilter:
    """Install `AcceptErrorFilter` on `loop`, in front of whatever handler it had."""
    handler = AcceptErrorFilter(loop.get_exception_handler(), interval=interval)
    loop.set_exception_handler(handler)
    return handler
