"""A fake Discord on 127.0.0.1: the REST API the bot calls and a minimal gateway, for the real discord.py.

Point discord.py at it with `discord.http.Route.BASE = fake.api_url` and
`discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)`. Every REST request is
recorded in `fake.requests` (path without `/api/v10`, parsed JSON or `payload_json`, uploaded files,
answered status). The routes are one table, `FakeDiscord._routes`; the rules Discord enforces
(auth, the 3-second acknowledgement window, 15-minute tokens, size and length limits, nonces,
missing permissions, 429s) are applied the way Discord answers them. Interactions to dispatch are built
by `interaction` (a slash command), `component_interaction` (a button or select) and `modal_submit`.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import discord
from aiohttp import web

from tests.fakes import discord_payloads as p
from tests.fakes.discord_gateway import FakeGatewayMixin
from tests.fakes.discord_messages import Call, InteractionState, MessagesMixin
from tests.fakes.discord_payloads import ApiError
from tests.fakes.recorder import Recorded, RequestLog, serve_on_loopback

DEFAULT_APPLICATION_ID = 1310000000000000001
DEFAULT_BOT_USER_ID = 1310000000000000002
DEFAULT_GUILD_ID = 111111111111111111
DEFAULT_CHANNEL_ID = 1310000000000000100
DEFAULT_USER_ID = 1310000000000000200


Handler = Callable[[Call], Awaitable[web.Response]]


@dataclasses.dataclass
class Stall:
    method: str
    path_contains: str
    after: bool
    with_files: bool
    hit: asyncio.Event


class FakeDiscord(MessagesMixin, FakeGatewayMixin):
    """The fake server. `start()` it, point discord.py at `api_url`/`gateway_url`, `close()` it after."""

    def __init__(
        self,
        *,
        token: str = "fake-bot-token",
        application_id: int = DEFAULT_APPLICATION_ID,
        bot_user_id: int = DEFAULT_BOT_USER_ID,
    ) -> None:
        self.token, self.application_id, self.bot_user_id = token, application_id, bot_user_id
        self.bot_name = "Imagine"
        self.guild_id, self.channel_id, self.user_id = DEFAULT_GUILD_ID, DEFAULT_CHANNEL_ID, DEFAULT_USER_ID
        self.requests = RequestLog()
        self.commands: dict[int | None, list[dict[str, Any]]] = {}
        self.messages: dict[int, dict[str, Any]] = {}
        self.modals: list[dict[str, Any]] = []  # every MODAL callback's data, with its interaction's token
        self.forbidden_channels: set[int] = set()
        self.nsfw_channels: set[int] = set()  # age-restricted; a test may take one out (the flag removed)
        self.unreadable_channels: set[int] = set()  # GET /channels/{id} answers 403 Missing Access
        # The servers the bot is in, each with the permissions of the bot's role there (GET /guilds/{id}
        # and its members); any other server answers 403 Missing Access, as Discord does to a stranger.
        self.bot_guilds: dict[int, int] = {DEFAULT_GUILD_ID: p.APP_PERMISSIONS}
        self.no_commands_scope: set[int] = set()  # invited without applications.commands
        self._interactions: dict[str, InteractionState] = {}  # by token
        self._channel_posts: dict[int, list[int]] = {}
        self._dm_channels: dict[int, dict[str, Any]] = {}  # by recipient id
        self._blobs: dict[int, tuple[bytes, str]] = {}  # attachment id -> bytes, content type
        self._rate_limits: list[tuple[str, str, float]] = []
        self._stalls: list[Stall] = []
        self._holds: list[tuple[str, str, asyncio.Event]] = []
        self.held = 0  # requests that waited for a `hold`
        self._released = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._init_gateway()
        app_, guild_ = "/applications/{app}", "/applications/{app}/guilds/{guild}"
        hook, msg = "/webhooks/{app}/{token}", "/channels/{channel}/messages/{message}"
        table: list[tuple[str, str, Handler]] = [
            ("GET", "/users/@me", self._get_me),
            ("GET", "/oauth2/applications/@me", self._get_application),
            ("GET", "/applications/@me", self._get_application),
            ("GET", "/guilds/{guild}", self._get_guild),
            ("GET", "/guilds/{guild}/members/{user}", self._get_member),
            ("GET", "/gateway", self._get_gateway),
            ("GET", "/gateway/bot", self._get_gateway),
            ("PUT", app_ + "/commands", self._put_commands),
            ("GET", app_ + "/commands", self._get_commands),
            ("PUT", guild_ + "/commands", self._put_commands),
            ("GET", guild_ + "/commands", self._get_commands),
            ("POST", "/interactions/{id}/{token}/callback", self._callback),
            ("POST", hook, self._followup),
            ("GET", hook + "/messages/{message}", self._webhook_message),
            ("PATCH", hook + "/messages/{message}", self._webhook_message),
            ("DELETE", hook + "/messages/{message}", self._webhook_message),
            ("POST", "/users/@me/channels", self._create_dm),
            ("GET", "/channels/{channel}", self._get_channel),
            ("POST", "/channels/{channel}/messages", self._post_channel_message),
            ("GET", msg, self._channel_message),
            ("PATCH", msg, self._channel_message),
            ("DELETE", msg, self._channel_message),
        ]
        self._routes = [(m, re.compile(re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", t)), t, h) for m, t, h in table]

    # -- lifecycle and addresses ------------------------------------------------------------------

    async def start(self, port: int = 0) -> None:
        """Serve on 127.0.0.1 at `port` (0: a free one; a test may name one a bot already tries)."""
        app = web.Application(client_max_size=64 * p.MiB)
        app.router.add_route("*", "/api/v10/{tail:.*}", self._api)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/attachments/{channel}/{attachment}/{filename}", self._download)
        self._runner, self._port = await serve_on_loopback(app, port)

    async def close(self) -> None:
        self._released.set()
        await self._close_gateway()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self._port}/gateway"

    # -- what tests call --------------------------------------------------------------------------

    def interaction(
        self,
        name: str = "imagine",
        options: dict[str, object] | None = None,
        *,
        user_id: int = DEFAULT_USER_ID,
        guild_id: int | None = DEFAULT_GUILD_ID,
        channel_id: int = DEFAULT_CHANNEL_ID,
        channel_nsfw: bool = False,
        created_at: datetime | None = None,
        attachment_size_limit: int = 10 * p.MiB,
        member_permissions: int = p.MEMBER_PERMISSIONS,
        roles: list[int] | None = None,
        locale: str = "en-US",
        guild_locale: str = "en-US",
    ) -> dict[str, Any]:
        """A realistic slash-command interaction; its token is known to the webhook routes from now on.
        `locale` is the member's client language, `guild_locale` the server's."""
        synced = next(
            (c for c in self.commands.get(guild_id, []) + self.commands.get(None, []) if c["name"] == name), None
        )
        declared = {o["name"]: o["type"] for o in (synced or {}).get("options", [])}
        command: dict[str, Any] = {"id": synced["id"] if synced else str(p.snowflake()), "name": name, "type": 1}
        command["options"] = [p.option_payload(k, v, declared) for k, v in (options or {}).items()]
        if synced and synced.get("guild_id"):
            command["guild_id"] = synced["guild_id"]
        return self._build(
            2, command, user_id=user_id, guild_id=guild_id, channel_id=channel_id, channel_nsfw=channel_nsfw,
            created_at=created_at, attachment_size_limit=attachment_size_limit,
            member_permissions=member_permissions, roles=roles, locale=locale, guild_locale=guild_locale,
        )  # fmt: skip

    def component_interaction(
        self,
        custom_id: str,
        message: dict[str, Any] | int,
        *,
        user_id: int = DEFAULT_USER_ID,
        guild_id: int | None = DEFAULT_GUILD_ID,
        channel_id: int | None = None,
        component_type: int = 2,
        values: list[str] | None = None,
        member_permissions: int = p.MEMBER_PERMISSIONS,
        roles: list[int] | None = None,
        locale: str = "en-US",
        guild_locale: str = "en-US",
    ) -> dict[str, Any]:
        """A click on the button `custom_id` (`component_type` 2), or `values` chosen in a select (3; 5-8
        for user/role/mentionable/channel selects), on `message`: a dict of `fake.messages` or its id.
        The payload carries the message as it is now; ValueError if no user could do that on it."""
        message = self.messages[message] if isinstance(message, int) else message
        data = p.component_data(message, custom_id, component_type, values)
        return self._build(
            3, data, message=message, user_id=user_id, guild_id=guild_id,
            channel_id=int(message["channel_id"]) if channel_id is None else channel_id,
            member_permissions=member_permissions, roles=roles, locale=locale, guild_locale=guild_locale,
        )  # fmt: skip

    def modal_submit(
        self,
        custom_id: str,
        fields: dict[str, str],
        *,
        message: dict[str, Any] | None = None,
        user_id: int = DEFAULT_USER_ID,
        guild_id: int | None = DEFAULT_GUILD_ID,
        channel_id: int | None = None,
        member_permissions: int = p.MEMBER_PERMISSIONS,
        roles: list[int] | None = None,
        locale: str = "en-US",
        guild_locale: str = "en-US",
    ) -> dict[str, Any]:
        """The modal `custom_id` submitted with `fields` (text input custom_id -> value); give `message` when
        the modal was opened from a component on it. The interaction that showed the last modal with this
        custom_id, if any, is its trigger (`triggering_interaction_metadata` of the messages it creates)."""
        if channel_id is None:
            channel_id = int(message["channel_id"]) if message is not None else DEFAULT_CHANNEL_ID
        payload = self._build(
            5, p.modal_submit_data(custom_id, fields), message=message, user_id=user_id, guild_id=guild_id,
            channel_id=channel_id, member_permissions=member_permissions, roles=roles, locale=locale,
            guild_locale=guild_locale,
        )  # fmt: skip
        shown = next((m for m in reversed(self.modals) if m["custom_id"] == custom_id), None)
        self._interactions[payload["token"]].trigger = self._interactions.get(shown["token"]) if shown else None
        return payload

    def _build(
        self, kind: int, data: dict[str, Any], *, user_id: int, guild_id: int | None, channel_id: int,
        member_permissions: int, roles: list[int] | None, message: dict[str, Any] | None = None,
        channel_nsfw: bool = False, created_at: datetime | None = None, attachment_size_limit: int = 10 * p.MiB,
        locale: str = "en-US", guild_locale: str = "en-US",
    ) -> dict[str, Any]:  # fmt: skip
        """An interaction of type `kind` with `data`, registered (its token known to the routes)."""
        app_permissions = p.APP_PERMISSIONS
        if channel_nsfw:  # the channel is age-restricted from now on, for GET /channels/{id} too
            self.nsfw_channels.add(channel_id)
        if channel_id in self.forbidden_channels:
            app_permissions &= ~discord.Permissions(send_messages=True, attach_files=True).value
        payload = p.interaction_payload(
            kind=kind,
            data=data,
            interaction_id=p.snowflake(created_at),
            token=p.random_token(),
            application_id=self.application_id,
            user=p.user_payload(user_id, f"user{str(user_id)[-4:]}"),
            guild_id=guild_id,
            channel_id=channel_id,
            channel_nsfw=channel_nsfw,
            attachment_size_limit=attachment_size_limit,
            member_permissions=member_permissions,
            app_permissions=app_permissions,
            roles=roles or [],
            message=copy.deepcopy(message),  # as it is now, whatever happens to it later
            locale=locale,
            guild_locale=guild_locale,
        )
        self._register(payload)
        return payload

    def _register(self, payload: dict[str, Any]) -> InteractionState:
        user = payload["member"]["user"] if "member" in payload else payload["user"]
        data, message = payload["data"], payload.get("message")
        state = InteractionState(
            int(payload["id"]), payload["token"], int(payload["channel_id"]), user,
            data.get("name") or data["custom_id"], int(payload["attachment_size_limit"]), kind=int(payload["type"]),
            message_id=int(message["id"]) if message else None, owners=payload["authorizing_integration_owners"],
        )  # fmt: skip
        return self._interactions.setdefault(state.token, state)

    async def dispatch_interaction(self, payload: dict[str, Any], *, backdate: float = 0.0) -> None:
        """Send INTERACTION_CREATE. `backdate` pretends it was sent that many seconds ago (3 s window)."""
        state = self._interactions.get(payload["token"]) or self._register(payload)
        state.dispatched_at = time.monotonic() - backdate
        await self.dispatch("INTERACTION_CREATE", payload)

    def expire_token(self, token: str) -> None:
        self._interactions[token].killed = True

    def original(self, token: str) -> dict[str, Any] | None:
        state = self._interactions.get(token)
        return self.messages.get(state.original_id) if state and state.original_id else None

    def rate_limit_next(self, method: str, path_prefix: str, retry_after: float) -> None:
        """The next `method` request whose path starts with `path_prefix` answers 429 once."""
        self._rate_limits.append((method.upper(), path_prefix, retry_after))

    # -- HTTP plumbing ----------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["tail"]
        body = await request.read()
        call = Call(request.method, path, {}, dict(request.query), None, [])
        try:
            if request.content_type == "multipart/form-data":
                call.json, call.files = p.parse_multipart(body, request.headers["Content-Type"])
            elif body:
                call.json = json.loads(body)
        except ValueError:
            response = self._json({"code": 50109, "message": "The request body contains invalid JSON."}, 400)
        else:
            stall = self._take_stall(call)
            if stall is not None and not stall.after:  # never reaches Discord; the answer never comes
                return await self._stalled(stall, request, body, call, 0)
            for method, path_contains, released in self._holds:
                if method == call.method and path_contains in call.path:
                    self.held += 1
                    await released.wait()
            response = await self._respond(request, body, call)
            if stall is not None:  # took effect on Discord's side, but the answer never comes
                return await self._stalled(stall, request, body, call, response.status)
        record = Recorded(call.method, path, call.query, dict(request.headers), call.json, body, tuple(call.files))
        await self.requests.add(dataclasses.replace(record, status=response.status))
        return response

    def stall(self, method: str, path_contains: str, *, after: bool, with_files: bool = False) -> asyncio.Event:
        """The next matching request hangs until the fake closes: `after=True` once it took effect
        (the message exists), `after=False` before. Returns an event set when it is hit, so a test
        can kill the bot at that moment."""
        stall = Stall(method.upper(), path_contains, after, with_files, asyncio.Event())
        self._stalls.append(stall)
        return stall.hit

    def hold(self, method: str, path_contains: str) -> asyncio.Event:
        """Matching requests wait (counted in `held`) until the returned event is set, then are
        answered as usual: a slow Discord, for as long as a test needs."""
        released = asyncio.Event()
        self._holds.append((method.upper(), path_contains, released))
        return released

    def _take_stall(self, call: Call) -> Stall | None:
        for stall in self._stalls:
            if (
                stall.method == call.method
                and stall.path_contains in call.path
                and (call.files or not stall.with_files)
            ):
                self._stalls.remove(stall)
                return stall
        return None

    async def _stalled(self, stall: Stall, request: web.Request, body: bytes, call: Call, status: int) -> web.Response:
        record = Recorded(call.method, call.path, call.query, dict(request.headers), call.json, body, tuple(call.files))
        await self.requests.add(dataclasses.replace(record, status=status))
        stall.hit.set()
        await self._released.wait()
        return self._json({"code": 0, "message": "fake shutting down"}, 503)

    async def _respond(self, request: web.Request, body: bytes, call: Call) -> web.Response:
        if len(body) > p.MAX_BODY:
            return self._json(ApiError(413, 40005, "Request entity too large").body(), 413)
        public = call.path.startswith(("/interactions/", "/webhooks/"))
        if not public and request.headers.get("Authorization") != f"Bot {self.token}":
            return self._json({"code": 0, "message": "401: Unauthorized"}, 401)
        for index, (method, prefix, retry_after) in enumerate(self._rate_limits):
            if method == call.method and call.path.startswith(prefix):
                del self._rate_limits[index]
                limited = {"message": "You are being rate limited.", "retry_after": retry_after, "global": False}
                extra = {
                    "Via": "1.1 google",
                    "Retry-After": str(math.ceil(retry_after)),
                    "X-RateLimit-Scope": "user",
                }
                extra.update({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset-After": f"{retry_after:.3f}"})
                return self._json(limited, 429, extra)
        matched = [(m, t, h, match) for m, pattern, t, h in self._routes if (match := pattern.fullmatch(call.path))]
        for method, template, handler, match in matched:
            if method != call.method:
                continue
            call.args = match.groupdict()
            try:
                response = await handler(call)
            except ApiError as error:
                response = self._json(error.body(), error.status)
            except Exception as error:  # a bug in the fake: a clear 400, never a 5xx discord.py would retry
                logging.getLogger(__name__).exception("fake Discord failed on %s %s", call.method, call.path)
                response = self._json({"code": 0, "message": f"fake Discord bug: {error!r}"}, 400)
            response.headers["X-RateLimit-Bucket"] = hashlib.sha1(f"{method} {template}".encode()).hexdigest()
            return response
        if matched:
            return self._json({"code": 0, "message": "405: Method Not Allowed"}, 405)
        return self._json({"code": 0, "message": "404: Not Found"}, 404)

    # -- login, gateway, commands -----------------------------------------------------------------

    async def _get_me(self, call: Call) -> web.Response:
        return self._json(p.user_payload(self.bot_user_id, self.bot_name, bot=True))

    async def _get_application(self, call: Call) -> web.Response:
        bot = p.user_payload(self.bot_user_id, self.bot_name, bot=True)
        return self._json(p.application_payload(self.application_id, bot, owner_id=DEFAULT_USER_ID + 1))

    async def _get_gateway(self, call: Call) -> web.Response:
        limit = {"total": 1000, "remaining": 999, "reset_after": 86_400_000, "max_concurrency": 1}
        return self._json({"url": self.gateway_url, "shards": 1, "session_start_limit": limit})

    def _scope(self, call: Call) -> int | None:
        if call.args["app"] != str(self.application_id):
            raise ApiError(403, 50001, "Missing Access")
        guild = int(call.args["guild"]) if "guild" in call.args else None
        if guild in self.no_commands_scope:
            raise ApiError(403, 50001, "Missing Access")
        return guild

    def guild(self, guild_id: int) -> dict[str, Any]:
        """The server as `GET /guilds/{id}` shows it: @everyone may do nothing, the bot's role what
        `bot_guilds` says. ApiError 403 when the bot is not in it."""
        if guild_id not in self.bot_guilds:
            raise ApiError(403, 50001, "Missing Access")
        roles = {guild_id: 0, guild_id + 1: self.bot_guilds[guild_id]}
        return p.guild_payload(guild_id, owner_id=DEFAULT_USER_ID + 1, roles=roles)

    async def _get_guild(self, call: Call) -> web.Response:
        return self._json(self.guild(int(call.args["guild"])))

    async def _get_member(self, call: Call) -> web.Response:
        guild_id = int(call.args["guild"])
        self.guild(guild_id)  # 403 for a stranger
        if call.args["user"] != str(self.bot_user_id):
            raise ApiError(404, 10007, "Unknown Member")
        bot = p.user_payload(self.bot_user_id, self.bot_name, bot=True)
        return self._json(p.member_payload(bot, [guild_id + 1]))

    async def _put_commands(self, call: Call) -> web.Response:
        guild = self._scope(call)
        if not isinstance(call.json, list):
            raise p.form_error("_root", "LIST_TYPE_CONVERT", "Only iterables may be used in a ListType")
        before = {(c["name"], c.get("type", 1)): c["id"] for c in self.commands.get(guild, [])}
        stored = []
        for command in call.json:
            key = (command["name"], command.get("type", 1))
            defaults = {"type": 1, "description": "", "options": [], "default_member_permissions": None, "nsfw": False}
            item = {**defaults, **command, "id": before.get(key) or str(p.snowflake())}
            item.update(application_id=str(self.application_id), version=str(p.snowflake()))
            if guild is not None:
                item["guild_id"] = str(guild)
            stored.append(item)
        self.commands[guild] = stored
        return self._json(stored)

    async def _get_commands(self, call: Call) -> web.Response:
        return self._json(self.commands.get(self._scope(call), []))
