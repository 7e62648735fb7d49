"""The message side of the fake Discord: interaction callbacks, webhook and channel routes, the message
store and attachments.

`FakeDiscord` mixes this in; every route goes through `_new_message`, `_edit` and `_message_verb`, so a
message looks the same whichever route created or edits it.
"""

from __future__ import annotations

import contextlib
import json
import mimetypes
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import discord
from aiohttp import web

from tests.fakes import discord_payloads as p
from tests.fakes.discord_payloads import ApiError
from tests.fakes.recorder import Recorded, RequestLog, UploadedFile

TOKEN_LIFETIME = timedelta(minutes=15)
ACK_WINDOW = 3.0  # seconds between INTERACTION_CREATE and the callback, as on Discord


@dataclass
class Call:
    method: str
    path: str
    args: dict[str, str]
    query: dict[str, str]
    json: Any
    files: list[UploadedFile]

    def flag(self, name: str) -> bool:
        return self.query.get(name, "").lower() in ("1", "true")


@dataclass
class InteractionState:
    id: int
    token: str
    channel_id: int
    user: dict[str, Any]
    name: str  # the command's name; a component's or a modal's custom_id
    file_limit: int
    kind: int = 2  # the interaction type: 2 command, 3 component, 5 modal submit
    message_id: int | None = None  # the message the component (or the component that opened the modal) is on
    owners: dict[str, str] = field(default_factory=dict)
    trigger: InteractionState | None = None  # for a modal submit: the interaction that showed the modal
    dispatched_at: float | None = None
    acknowledged: bool = False
    killed: bool = False
    original_id: int | None = None  # what `@original` is: its own response, or the message 6/7 updated
    message_ids: set[int] = field(default_factory=set)

    @property
    def dead(self) -> bool:
        return self.killed or datetime.now(UTC) >= discord.utils.snowflake_time(self.id) + TOKEN_LIFETIME


class MessagesMixin:
    """Channel routes and the message store; `FakeDiscord` provides the ids, the URLs and the state."""

    application_id: int
    bot_user_id: int
    bot_name: str
    guild_id: int
    requests: RequestLog
    messages: dict[int, dict[str, Any]]
    modals: list[dict[str, Any]]
    forbidden_channels: set[int]
    nsfw_channels: set[int]
    unreadable_channels: set[int]
    _interactions: dict[str, InteractionState]
    _channel_posts: dict[int, list[int]]
    _dm_channels: dict[int, dict[str, Any]]
    _blobs: dict[int, tuple[bytes, str]]

    @property
    def base_url(self) -> str:
        raise NotImplementedError

    def _json(self, data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        limits = {
            "X-RateLimit-Limit": "50",
            "X-RateLimit-Remaining": "49",
            "X-RateLimit-Reset": f"{time.time() + 1:.3f}",
            "X-RateLimit-Reset-After": "1.000",
            "X-RateLimit-Bucket": "0" * 32,
            **(headers or {}),
        }
        if status == 204:
            return web.Response(status=204, headers=limits)
        # `body=` keeps the Content-Type exactly `application/json`: discord.py parses nothing else.
        return web.Response(
            body=json.dumps(data).encode(), status=status, content_type="application/json", headers=limits
        )

    def channel_messages(self, channel_id: int) -> list[dict[str, Any]]:
        return [self.messages[m] for m in self._channel_posts.get(channel_id, []) if m in self.messages]

    async def _download(self, request: web.Request) -> web.Response:
        """The bytes of an attachment, at the `url` Discord would give it (no auth, like the CDN)."""
        attachment = request.match_info["attachment"]
        blob = self._blobs.get(int(attachment)) if attachment.isdigit() else None
        response = web.Response(body=blob[0], content_type=blob[1]) if blob else web.Response(status=404)
        record = Recorded(
            "GET", request.path, dict(request.query), dict(request.headers), None, b"", (), response.status
        )
        await self.requests.add(record)
        return response

    # -- interaction callbacks and webhooks ------------------------------------------------------

    async def _callback(self, call: Call) -> web.Response:
        state = self._interactions.get(call.args["token"])
        if state is None or str(state.id) != call.args["id"]:
            raise ApiError(404, 10062, "Unknown interaction")
        if state.killed:
            raise ApiError(401, 50027, "Invalid Webhook Token")
        if state.acknowledged:
            raise ApiError(400, 40060, "Interaction has already been acknowledged.")
        if state.dispatched_at is None or time.monotonic() - state.dispatched_at > ACK_WINDOW:
            raise ApiError(404, 10062, "Unknown interaction")
        kind = (call.json or {}).get("type")
        data = (call.json or {}).get("data") or {}
        if kind not in (1, 4, 5, 6, 7, 8, 9, 10, 12):
            raise p.form_error("type", "BASE_TYPE_CHOICES", "Value must be one of valid interaction callback types.")
        allowed = [t for t in p.CALLBACK_TYPES[state.kind] if t not in (6, 7) or state.message_id is not None]
        if kind not in allowed:  # e.g. a modal in answer to a modal, or UPDATE_MESSAGE for a slash command
            raise p.form_error("type", "BASE_TYPE_CHOICES", f"Value must be one of {{{', '.join(map(str, allowed))}}}.")
        if kind in (4, 7):
            p.check_message(data, call.files, state.file_limit, creating=kind == 4)
        elif kind == 9:
            p.check_modal(data)
        message = None
        if kind in (4, 5):
            flags = int(data.get("flags") or 0)
            body = data if kind == 4 else {"content": "", "flags": (flags & 64) | 128}  # 128: "thinking…"
            message = self._new_message(state.channel_id, body, call.files, interaction=state)
            state.original_id = int(message["id"])
        elif kind in (6, 7):  # the message the component is on becomes what `@original` edits
            message = self.messages.get(state.message_id or 0)
            if message is None:
                raise ApiError(404, 10008, "Unknown Message")
            if kind == 7:
                self._edit(message, data, call.files)
            state.original_id = int(message["id"])
            state.message_ids.add(state.original_id)
        elif kind == 9:
            self.modals.append({"interaction_id": str(state.id), "token": state.token, **data})
        state.acknowledged = True
        if not call.flag("with_response"):
            return self._json(None, 204)
        interaction: dict[str, Any] = {"id": str(state.id), "type": state.kind}
        resource: dict[str, Any] = {"type": kind}
        if message is not None and kind != 6:
            interaction.update(
                response_message_id=message["id"],
                response_message_loading=kind == 5,
                response_message_ephemeral=bool(message["flags"] & 64),
            )
            resource["message"] = message
        return self._json({"interaction": interaction, "resource": resource})

    def _hook(self, call: Call) -> InteractionState:
        state = self._interactions.get(call.args["token"])
        if call.args["app"] != str(self.application_id) or state is None:
            raise ApiError(404, 10015, "Unknown Webhook")
        if state.dead:
            raise ApiError(401, 50027, "Invalid Webhook Token")
        if not state.acknowledged:
            raise ApiError(404, 10015, "Unknown Webhook")
        return state

    async def _followup(self, call: Call) -> web.Response:
        state = self._hook(call)
        payload = call.json or {}
        p.check_message(payload, call.files, state.file_limit, creating=True)
        original = self.messages.get(state.original_id or 0)
        if original is not None and original["flags"] & 128:  # the first follow-up replaces "thinking…"
            message = self._edit(original, {k: v for k, v in payload.items() if k != "flags"}, call.files)
        else:
            message = self._new_message(state.channel_id, payload, call.files, interaction=state)
        return self._json(message if call.flag("wait") else None, 200 if call.flag("wait") else 204)

    async def _webhook_message(self, call: Call) -> web.Response:
        state = self._hook(call)
        ref = call.args["message"]
        message_id = state.original_id if ref == "@original" else int(ref) if ref.isdigit() else None
        message = self.messages.get(message_id or 0)
        if message is None or message_id not in state.message_ids:
            raise ApiError(404, 10008, "Unknown Message")
        return await self._message_verb(call, message, state.file_limit)

    # -- channels and messages --------------------------------------------------------------------

    def _channel(self, call: Call, *, writing: bool) -> int:
        channel_id = int(call.args["channel"]) if call.args["channel"].isdigit() else 0
        if writing and channel_id in self.forbidden_channels:
            raise ApiError(403, 50013, "Missing Permissions")
        return channel_id

    async def _get_channel(self, call: Call) -> web.Response:
        channel_id = self._channel(call, writing=False)
        if channel_id in self.unreadable_channels:
            return self._json({"code": 50001, "message": "Missing Access"}, 403)
        dm = next((c for c in self._dm_channels.values() if c["id"] == str(channel_id)), None)
        nsfw = channel_id in self.nsfw_channels
        return self._json(
            dm or p.text_channel_payload(channel_id, self.guild_id, nsfw=nsfw, permissions=p.APP_PERMISSIONS)
        )

    async def _create_dm(self, call: Call) -> web.Response:
        recipient = int((call.json or {}).get("recipient_id") or 0)
        user = p.user_payload(recipient, f"user{str(recipient)[-4:]}")
        return self._json(self._dm_channels.setdefault(recipient, p.dm_channel_payload(p.snowflake(), user)))

    async def _post_channel_message(self, call: Call) -> web.Response:
        channel_id = self._channel(call, writing=True)
        payload = call.json or {}
        p.check_message(payload, call.files, p.CHANNEL_FILE_LIMIT, creating=True)
        nonce = payload.get("nonce")
        if nonce is not None and payload.get("enforce_nonce"):
            for existing in self.channel_messages(channel_id):
                if existing.get("nonce") == str(nonce):
                    return self._json(existing)
        message = self._new_message(channel_id, payload, call.files, interaction=None)
        self._channel_posts.setdefault(channel_id, []).append(int(message["id"]))
        return self._json(message)

    async def _channel_message(self, call: Call) -> web.Response:
        channel_id = self._channel(call, writing=call.method == "PATCH")
        message = self.messages.get(int(call.args["message"]) if call.args["message"].isdigit() else 0)
        if message is None or message["channel_id"] != str(channel_id) or message["flags"] & 64:
            raise ApiError(404, 10008, "Unknown Message")
        return await self._message_verb(call, message, p.CHANNEL_FILE_LIMIT)

    async def _message_verb(self, call: Call, message: dict[str, Any], file_limit: int) -> web.Response:
        if call.method == "DELETE":
            del self.messages[int(message["id"])]
            return self._json(None, 204)
        if call.method == "PATCH":
            p.check_message(call.json or {}, call.files, file_limit, creating=False)
            message = self._edit(message, call.json or {}, call.files)
        return self._json(message)

    def _new_message(
        self,
        channel_id: int,
        payload: dict[str, Any],
        files: list[UploadedFile],
        *,
        interaction: InteractionState | None,
    ) -> dict[str, Any]:
        message_id = p.snowflake()
        message: dict[str, Any] = {
            "id": str(message_id), "type": 0, "channel_id": str(channel_id), "content": payload.get("content") or "",
            "author": p.user_payload(self.bot_user_id, self.bot_name, bot=True), "embeds": [], "components": [],
            "attachments": [], "flags": int(payload.get("flags") or 0), "timestamp": p.now_iso(),
            "edited_timestamp": None, "tts": bool(payload.get("tts")), "mention_everyone": False, "mentions": [],
            "mention_roles": [], "pinned": False, "allowed_mentions": payload.get("allowed_mentions"),
            "nonce": None if payload.get("nonce") is None else str(payload["nonce"]),
        }  # fmt: skip
        if interaction is not None:
            kind = 20 if interaction.kind == 2 else 19  # CHAT_INPUT_COMMAND; REPLY for components and modals
            message.update(type=kind, webhook_id=str(self.application_id), application_id=str(self.application_id))
            message["interaction_metadata"] = self._metadata(interaction)
        keys = ("embeds", "components", "attachments")
        self._edit(message, {k: v for k, v in payload.items() if k in keys}, files, edited=False)
        self.messages[message_id] = message  # only once the body was valid
        if interaction is not None:
            interaction.message_ids.add(message_id)
        return message

    def _metadata(self, state: InteractionState) -> dict[str, Any]:
        """A message's `interaction_metadata`: which interaction it answers, by whom."""
        metadata = {"id": str(state.id), "type": state.kind, "user": state.user}
        metadata["authorizing_integration_owners"] = state.owners
        if state.kind == 2:
            metadata.update(name=state.name, command_type=1)
        if state.kind == 3 and state.message_id is not None:
            metadata["interacted_message_id"] = str(state.message_id)
        if state.trigger is not None:
            metadata["triggering_interaction_metadata"] = self._metadata(state.trigger)
        if state.original_id is not None and state.original_id != state.message_id:
            metadata["original_response_message_id"] = str(state.original_id)
        return metadata

    def _edit(
        self, message: dict[str, Any], payload: dict[str, Any], files: list[UploadedFile], *, edited: bool = True
    ) -> dict[str, Any]:
        """Apply the keys present in `payload` (absent ones stay as they are); attachments first, they may fail."""
        if "attachments" in payload or files:
            message["attachments"] = self._attachments(message, payload.get("attachments"), files)
        if "content" in payload:
            message["content"] = payload["content"] or ""
        if "embeds" in payload:
            message["embeds"] = [{"type": "rich", **e} for e in payload["embeds"] or []]
        for key in ("components", "allowed_mentions"):
            if key in payload:
                message[key] = payload[key] or ([] if key == "components" else None)
        if "flags" in payload:
            message["flags"] = (message["flags"] & 64) | (int(payload["flags"] or 0) & ~(64 | 128))
        if edited:
            message["flags"] &= ~128
            message["edited_timestamp"] = p.now_iso()
        return message

    def _attachments(
        self, message: dict[str, Any], entries: list[dict[str, Any]] | None, files: list[UploadedFile]
    ) -> list[dict[str, Any]]:
        """`entries` is the payload's list: `{id: n}` is the upload `files[n]`, an existing id keeps that one."""
        kept = {a["id"]: a for a in message["attachments"]}
        uploads = {f.field: f for f in files}
        if entries is None:  # files without an attachments list are added to what is there
            return [*message["attachments"], *(self._store(message, {}, f) for f in files)]
        result = []
        for entry in entries:
            ref = str(entry.get("id"))
            if ref in kept:
                result.append(kept[ref])
            elif f"files[{ref}]" in uploads:
                result.append(self._store(message, entry, uploads[f"files[{ref}]"]))
            else:
                raise p.form_error("attachments", "ATTACHMENT_NOT_FOUND", f"Unknown attachment {ref}")
        return result

    def _store(self, message: dict[str, Any], entry: dict[str, Any], upload: UploadedFile) -> dict[str, Any]:
        attachment_id = p.snowflake()
        filename = entry.get("filename") or upload.filename
        content_type = mimetypes.guess_type(filename)[0] or upload.content_type or "application/octet-stream"
        self._blobs[attachment_id] = (upload.data, content_type)
        url = f"{self.base_url}/attachments/{message['channel_id']}/{attachment_id}/{quote(filename)}"
        attachment = {"id": str(attachment_id), "filename": filename, "size": upload.size, "content_type": content_type}
        attachment.update(url=url, proxy_url=url)
        with contextlib.suppress(KeyError):
            attachment["description"] = entry["description"]
        return attachment
