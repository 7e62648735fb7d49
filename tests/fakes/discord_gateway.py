"""The fake Discord gateway: HELLO, IDENTIFY -> READY, heartbeats, RESUME refused, and dispatches.

The real client asks for `compress=zlib-stream`; this gateway answers with plain TEXT frames, which
discord.py reads as JSON without decompressing. One session at a time receives dispatches: the
one that identified last.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from tests.fakes.discord_payloads import text_channel_payload, user_payload

HEARTBEAT_INTERVAL_MS = 41250
IDENTIFY_TIMEOUT = 10.0


class FakeGatewayMixin:
    """Gateway half of `FakeDiscord`; the REST half provides the token, ids and `gateway_url`."""

    token: str
    application_id: int
    bot_user_id: int
    bot_name: str
    channel_id: int
    nsfw_channels: set[int]

    def guild(self, guild_id: int) -> dict[str, Any]:
        raise NotImplementedError

    def _init_gateway(self) -> None:
        self.identified = asyncio.Event()
        self.identifying = asyncio.Event()  # an IDENTIFY arrived (READY follows unless held)
        self.hold_ready: asyncio.Event | None = None  # when set to an unset event, READY waits for it
        self.identify_count = 0
        self.gateway_received: list[dict[str, Any]] = []  # every payload a client sent, in order
        self._sockets: set[web.WebSocketResponse] = set()
        self._session: web.WebSocketResponse | None = None  # the socket that identified last
        # Every identified socket and its [shard id, shard count], for routing as Discord does.
        self._shards: dict[web.WebSocketResponse, tuple[int, int]] = {}
        self._sequence: dict[web.WebSocketResponse, int] = {}
        # Servers (of `bot_guilds`) sent to the bot as GUILD_CREATE after READY (each to its shard),
        # with the default channel in them, as Discord does for every server the bot is in:
        # discord.py then has the channel in its cache. Empty by default: most tests want the bot
        # to ask GET /channels/{id}.
        self.loaded_guilds: set[int] = set()

    @property
    def gateway_url(self) -> str:
        raise NotImplementedError

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send an op 0 dispatch to the session that owns it (waits up to 10 s for one): as Discord
        does, a guild's events go to shard `(guild_id >> 22) % shard_count`, the rest to shard 0;
        without a session for that shard, to the one that identified last."""
        try:
            await asyncio.wait_for(self.identified.wait(), IDENTIFY_TIMEOUT)
        except TimeoutError:
            raise AssertionError(f"no client identified on the fake gateway within {IDENTIFY_TIMEOUT}s") from None
        ws = self._session_for(data.get("guild_id"))
        if ws is None or ws.closed:
            raise AssertionError("the identified gateway session is gone")
        await self._send(ws, op=0, t=event, d=data)

    def _session_for(self, guild_id: object) -> web.WebSocketResponse | None:
        live = {ws: shard for ws, shard in self._shards.items() if not ws.closed}
        for ws, (shard_id, count) in live.items():
            if shard_id == (int(str(guild_id)) >> 22) % count if guild_id else shard_id == 0:
                return ws
        return self._session

    def shard_of(self, guild_id: int, count: int) -> int:
        """The shard Discord sends a guild's events to."""
        return (guild_id >> 22) % count

    async def _send(self, ws: web.WebSocketResponse, *, op: int, d: Any, t: str | None = None) -> None:
        seq = None
        if op == 0:
            seq = self._sequence[ws] = self._sequence.get(ws, 0) + 1
        await ws.send_str(json.dumps({"op": op, "d": d, "s": seq, "t": t}))

    def _ready(self, shard: tuple[int, int] = (0, 1)) -> dict[str, Any]:
        return {
            "v": 10,
            "user": user_payload(self.bot_user_id, self.bot_name, bot=True),
            "guilds": [],
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "session_id": secrets.token_hex(16),
            "session_type": "normal",
            "resume_gateway_url": self.gateway_url,
            "shard": list(shard),
            "application": {"id": str(self.application_id), "flags": 0},
            "_trace": ["fake-gateway"],
        }

    def _guild_create(self, guild_id: int) -> dict[str, Any]:
        channel = text_channel_payload(self.channel_id, guild_id, nsfw=self.channel_id in self.nsfw_channels)
        del channel["permissions"]  # only GET /channels/{id} carries the bot's own permissions
        return {
            **self.guild(guild_id),
            "unavailable": False, "large": False, "member_count": 2, "joined_at": "2026-01-01T00:00:00+00:00",
            "channels": [channel], "threads": [], "members": [], "voice_states": [], "presences": [],
            "stage_instances": [], "guild_scheduled_events": [], "soundboard_sounds": [],
        }  # fmt: skip

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        self._sockets.add(ws)
        try:
            await self._send(ws, op=10, d={"heartbeat_interval": HEARTBEAT_INTERVAL_MS, "_trace": ["fake-gateway"]})
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    continue
                payload = json.loads(message.data)
                self.gateway_received.append(payload)
                if not await self._handle_op(ws, payload):
                    break
        finally:
            self._sockets.discard(ws)
            self._sequence.pop(ws, None)
            self._shards.pop(ws, None)
            if self._session is ws:  # another process's session, if any, takes its place
                self._session = next((other for other in self._shards if not other.closed), None)
                if self._session is None:
                    self.identified.clear()
        return ws

    async def _handle_op(self, ws: web.WebSocketResponse, payload: dict[str, Any]) -> bool:
        """Answer one client payload; False once the socket was closed."""
        op, data = payload.get("op"), payload.get("d")
        if op == 1:  # HEARTBEAT
            await self._send(ws, op=11, d=None)
        elif op == 2:  # IDENTIFY
            if not isinstance(data, dict) or data.get("token") != self.token:
                await ws.close(code=4004, message=b"Authentication failed.")
                return False
            self.identifying.set()
            if self.hold_ready is not None:
                await self.hold_ready.wait()
            self._sequence[ws] = 0
            shard = data.get("shard") or [0, 1]
            await self._send(ws, op=0, t="READY", d=self._ready((int(shard[0]), int(shard[1]))))
            for guild_id in sorted(self.loaded_guilds):
                if self.shard_of(guild_id, int(shard[1])) == int(shard[0]):
                    await self._send(ws, op=0, t="GUILD_CREATE", d=self._guild_create(guild_id))
            self._shards[ws] = (int(shard[0]), int(shard[1]))
            self._session = ws
            self.identify_count += 1
            self.identified.set()
        elif op == 6:  # RESUME: sessions are never resumable here; the client identifies again
            await self._send(ws, op=9, d=False)
        return True

    async def _close_gateway(self) -> None:
        for ws in list(self._sockets):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(code=WSCloseCode.GOING_AWAY, message=b"fake shutting down"), 2)
