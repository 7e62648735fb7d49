"""Pure helpers for the fake Discord: ids, payload shapes, multipart bodies and Discord's message limits.

Shapes follow what discord.py 2.7 reads (see `discord/interactions.py`, `member.py`, `channel.py`,
`message.py`), so a payload built here goes through the real parsers unchanged.
"""

from __future__ import annotations

import itertools
import json
import secrets
from datetime import UTC, datetime
from email.message import Message as MimeHeaders
from typing import Any

import discord

from tests.fakes.recorder import UploadedFile

MiB = 1024 * 1024
MAX_BODY = 25 * MiB
CHANNEL_FILE_LIMIT = 10 * MiB
MAX_FILES = 10
MAX_CONTENT = 2000
MAX_EMBEDS_TOTAL = 6000
# What an ordinary member may do in a text channel: send, embed, attach, read history, use commands.
# Deliberately without manage_messages, mention_everyone or administrator.
MEMBER_PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    send_messages_in_threads=True,
    embed_links=True,
    attach_files=True,
    read_message_history=True,
    add_reactions=True,
    use_external_emojis=True,
    use_application_commands=True,
).value
APP_PERMISSIONS = discord.Permissions(
    view_channel=True, send_messages=True, embed_links=True, attach_files=True, read_message_history=True
).value
OPTION_TYPES: tuple[tuple[type, int], ...] = ((bool, 5), (int, 4), (float, 10), (str, 3))  # bool before int
# The callback types Discord accepts for each interaction type (PING, APPLICATION_COMMAND,
# MESSAGE_COMPONENT, AUTOCOMPLETE, MODAL_SUBMIT); 6 and 7 only where there is a message to update.
CALLBACK_TYPES = {1: (1,), 2: (4, 5, 9, 10, 12), 3: (4, 5, 6, 7, 9, 10, 12), 4: (8,), 5: (4, 5, 6, 7, 10)}

_sequence = itertools.count(1)


class ApiError(Exception):
    """An error answer of the fake API: `{"code": code, "message": message}` with an HTTP status."""

    def __init__(self, status: int, code: int, message: str, errors: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status, self.code, self.message, self.errors = status, code, message, errors

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.errors is not None:
            body["errors"] = self.errors
        return body


def form_error(field: str, code: str, message: str) -> ApiError:
    """Discord's 50035; a dotted `field` ("data.title") nests the way Discord nests its `errors`."""
    errors: dict[str, Any] = {"_errors": [{"code": code, "message": message}]}
    for key in reversed(field.split(".")):
        errors = {key: errors}
    return ApiError(400, 50035, "Invalid Form Body", errors)


def snowflake(at: datetime | None = None) -> int:
    """A unique snowflake whose timestamp (as `discord.utils.snowflake_time` reads it) is `at`, default now."""
    return discord.utils.time_snowflake(at or datetime.now(UTC)) + next(_sequence) % 4096


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def random_token() -> str:
    return "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(48)


def user_payload(user_id: int, name: str, *, bot: bool = False) -> dict[str, Any]:
    user: dict[str, Any] = {
        "id": str(user_id),
        "username": name,
        "discriminator": "0",
        "global_name": None if bot else name.title(),
        "avatar": None,
        "public_flags": 0,
        "flags": 0,
    }
    if bot:
        user.update(bot=True, verified=True, mfa_enabled=False, locale="en-US")
    return user


def text_channel_payload(channel_id: int, guild_id: int, *, nsfw: bool = False, permissions: int = 0) -> dict[str, Any]:
    return {
        "id": str(channel_id),
        "type": 0,
        "guild_id": str(guild_id),
        "name": f"channel-{str(channel_id)[-4:]}",
        "position": 0,
        "parent_id": None,
        "topic": None,
        "nsfw": nsfw,
        "rate_limit_per_user": 0,
        "last_message_id": None,
        "permission_overwrites": [],
        "flags": 0,
        "permissions": str(permissions),
    }


def application_payload(application_id: int, bot: dict[str, Any], *, owner_id: int) -> dict[str, Any]:
    """`GET /oauth2/applications/@me`, with every key `discord.appinfo.AppInfo` requires."""
    return {
        "id": str(application_id), "name": bot["username"], "icon": None, "description": "", "summary": "",
        "type": None, "bot_public": True, "bot_require_code_grant": False, "verify_key": "0" * 64, "flags": 0,
        "owner": user_payload(owner_id, "owner"), "team": None, "hook": True, "tags": [], "bot": bot,
        "redirect_uris": [], "interactions_endpoint_url": None, "integration_types_config": {"0": {}},
        "approximate_guild_count": 1,
    }  # fmt: skip


def guild_payload(guild_id: int, *, owner_id: int, roles: dict[int, int]) -> dict[str, Any]:
    """`GET /guilds/{id}` (and enough for a GUILD_CREATE): `roles` maps role ids to permission bits;
    the guild's own id is its @everyone role."""
    role_list = [
        {"id": str(role), "name": "@everyone" if role == guild_id else f"role-{str(role)[-4:]}", "color": 0,
         "hoist": False, "icon": None, "unicode_emoji": None, "position": 0 if role == guild_id else 1,
         "permissions": str(bits), "managed": role != guild_id, "mentionable": False, "flags": 0}
        for role, bits in roles.items()
    ]  # fmt: skip
    return {
        "id": str(guild_id), "name": f"guild-{str(guild_id)[-4:]}", "icon": None, "splash": None,
        "discovery_splash": None, "owner_id": str(owner_id), "afk_channel_id": None, "afk_timeout": 300,
        "verification_level": 0, "default_message_notifications": 0, "explicit_content_filter": 0,
        "roles": role_list, "emojis": [], "stickers": [], "features": [], "mfa_level": 0, "application_id": None,
        "system_channel_id": None, "system_channel_flags": 0, "rules_channel_id": None, "vanity_url_code": None,
        "description": None, "banner": None, "premium_tier": 0, "preferred_locale": "en-US",
        "public_updates_channel_id": None, "nsfw_level": 0, "premium_progress_bar_enabled": False,
    }  # fmt: skip


def member_payload(user: dict[str, Any], roles: list[int]) -> dict[str, Any]:
    """`GET /guilds/{id}/members/{user id}`."""
    return {
        "user": user, "nick": None, "avatar": None, "roles": [str(r) for r in roles], "joined_at": now_iso(),
        "premium_since": None, "deaf": False, "mute": False, "flags": 0, "pending": False,
    }  # fmt: skip


def dm_channel_payload(channel_id: int, recipient: dict[str, Any]) -> dict[str, Any]:
    return {"id": str(channel_id), "type": 1, "last_message_id": None, "flags": 0, "recipients": [recipient]}


def option_payload(name: str, value: object, declared: dict[str, int]) -> dict[str, Any]:
    """One command option as Discord sends it; the type is the synced command's if known, else inferred."""
    inferred = next((t for py_type, t in OPTION_TYPES if isinstance(value, py_type)), 3)
    return {"name": name, "type": declared.get(name, inferred), "value": value}


def interaction_payload(
    *,
    kind: int,
    data: dict[str, Any],
    interaction_id: int,
    token: str,
    application_id: int,
    user: dict[str, Any],
    guild_id: int | None,
    channel_id: int,
    channel_nsfw: bool,
    attachment_size_limit: int,
    member_permissions: int,
    app_permissions: int,
    roles: list[int],
    message: dict[str, Any] | None = None,
    locale: str = "en-US",
    guild_locale: str = "en-US",
) -> dict[str, Any]:
    """An interaction of type `kind` (2 command, 3 component, 5 modal submit) in a guild text channel,
    or in the bot's DM if no guild; `message` is the message a component (or its modal) is on."""
    payload: dict[str, Any] = {
        "id": str(interaction_id),
        "application_id": str(application_id),
        "type": kind,
        "data": data,
        "channel_id": str(channel_id),
        "token": token,
        "version": 1,
        "app_permissions": str(app_permissions),
        "locale": locale,
        "entitlements": [],
        "entitlement_sku_ids": [],
        "attachment_size_limit": attachment_size_limit,
    }
    if message is not None:
        payload["message"] = message
    if guild_id is None:
        payload.update(
            user=user,
            channel=dm_channel_payload(channel_id, user),
            context=1,
            authorizing_integration_owners={"0": "0"},
        )
        return payload
    member = {
        "user": user,
        "roles": [str(r) for r in roles],
        "joined_at": "2024-01-01T00:00:00.000000+00:00",
        "premium_since": None,
        "nick": None,
        "avatar": None,
        "deaf": False,
        "mute": False,
        "pending": False,
        "flags": 0,
        "permissions": str(member_permissions),
        "communication_disabled_until": None,
    }
    payload.update(
        guild_id=str(guild_id),
        guild={"id": str(guild_id), "locale": guild_locale, "features": []},
        guild_locale=guild_locale,
        member=member,
        channel=text_channel_payload(channel_id, guild_id, nsfw=channel_nsfw, permissions=member_permissions),
        context=0,
        authorizing_integration_owners={"0": str(guild_id)},
    )
    return payload


def walk_components(components: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every component of a message, nested ones (rows, sections' accessories, containers) included."""
    found = []
    for component in components:
        found.append(component)
        found += walk_components(component.get("components") or [])
        found += walk_components([component["accessory"]] if component.get("accessory") else [])
    return found


def component_data(
    message: dict[str, Any], custom_id: str, component_type: int, values: list[str] | None
) -> dict[str, Any]:
    """`data` of a MESSAGE_COMPONENT interaction; raise ValueError for what no user could click on `message`."""
    component = next((c for c in walk_components(message["components"]) if c.get("custom_id") == custom_id), None)
    if component is None or component["type"] != component_type or component.get("disabled"):
        state = "missing" if component is None else f"type {component['type']}, disabled={component.get('disabled')}"
        raise ValueError(f"no enabled component {custom_id!r} of type {component_type} on the message ({state})")
    data: dict[str, Any] = {"custom_id": custom_id, "component_type": component_type}
    if component_type == 2:
        return data
    data["values"] = list(values or [])
    options = {o["value"] for o in component.get("options") or []}
    lowest, highest = component.get("min_values", 1), component.get("max_values", 1)
    if not lowest <= len(data["values"]) <= highest or (component_type == 3 and not set(data["values"]) <= options):
        raise ValueError(f"values {data['values']} cannot be chosen in {custom_id!r}")
    return data


def modal_submit_data(custom_id: str, fields: dict[str, str]) -> dict[str, Any]:
    """`data` of a MODAL_SUBMIT interaction: one action row per text input, ids numbered as Discord does."""
    rows = [
        {"type": 1, "id": 2 * n + 1, "components": [{"type": 4, "id": 2 * n + 2, "custom_id": key, "value": value}]}
        for n, (key, value) in enumerate(fields.items())
    ]
    return {"custom_id": custom_id, "components": rows}


def check_modal(data: dict[str, Any]) -> None:
    """A MODAL callback's `data`: a custom_id, a title (up to 45) and 1 to 5 top-level components."""
    for key, limit in (("custom_id", 100), ("title", 45)):
        value = data.get(key)
        if not isinstance(value, str) or not value:
            raise form_error(f"data.{key}", "BASE_TYPE_REQUIRED", "This field is required")
        if len(value) > limit:
            raise form_error(f"data.{key}", "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")
    components = data.get("components")
    if not isinstance(components, list) or not 1 <= len(components) <= 5:
        raise form_error("data.components", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5 in length.")


def parse_multipart(body: bytes, content_type: str) -> tuple[Any, list[UploadedFile]]:
    """Split a multipart/form-data body into its parsed `payload_json` and its `files[n]` parts."""
    header = MimeHeaders()
    header["content-type"] = content_type
    boundary = header.get_param("boundary")
    if not isinstance(boundary, str):
        raise ApiError(400, 50109, "The request body contains invalid JSON.")
    payload: Any = None
    files: list[UploadedFile] = []
    for chunk in body.split(b"--" + boundary.encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, data = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        headers = MimeHeaders()
        for line in head.decode("utf-8", "replace").split("\r\n"):
            name, colon, value = line.partition(":")
            if colon:
                headers[name.strip()] = value.strip()
        data = data.removesuffix(b"\r\n")
        field = headers.get_param("name", header="content-disposition")
        if field == "payload_json":
            payload = json.loads(data)
        elif isinstance(field, str) and field.startswith("files["):
            filename = headers.get_filename() or field
            files.append(UploadedFile(field, filename, len(data), headers.get("content-type"), data))
    return payload, files


def embed_chars(embed: dict[str, Any]) -> int:
    fields = embed.get("fields") or []
    texts = [embed.get("title"), embed.get("description"), (embed.get("footer") or {}).get("text")]
    texts += [(embed.get("author") or {}).get("name")]
    texts += [f.get(k) for f in fields for k in ("name", "value")]
    return sum(len(t) for t in texts if isinstance(t, str))


def check_message(payload: dict[str, Any], files: list[UploadedFile], file_limit: int, *, creating: bool) -> None:
    """Discord's limits on a message body; raise the error Discord answers with."""
    if len(files) > MAX_FILES:
        raise ApiError(400, 30015, f"Maximum number of attachments in a message reached ({MAX_FILES})")
    if any(f.size > file_limit for f in files):
        raise ApiError(413, 40005, "Request entity too large")
    content = payload.get("content")
    if isinstance(content, str) and len(content) > MAX_CONTENT:
        raise form_error("content", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_CONTENT} or fewer in length.")
    embeds = payload.get("embeds") or []
    if len(embeds) > 10:
        raise form_error("embeds", "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
    for embed in embeds:
        if len(embed.get("title") or "") > 256 or len(embed.get("description") or "") > 4096:
            raise form_error("embeds", "BASE_TYPE_MAX_LENGTH", "Embed title or description is too long.")
        fields = embed.get("fields") or []
        if len(fields) > 25 or any(len(f.get("name", "")) > 256 or len(f.get("value", "")) > 1024 for f in fields):
            raise form_error("embeds", "BASE_TYPE_MAX_LENGTH", "Embed fields are too many or too long.")
    if sum(embed_chars(e) for e in embeds) > MAX_EMBEDS_TOTAL:
        raise form_error("embeds", "MAX_EMBED_SIZE_EXCEEDED", f"Embed size exceeds maximum size of {MAX_EMBEDS_TOTAL}")
    has_body = content or embeds or files or payload.get("components") or payload.get("sticker_ids")
    if creating and not (has_body or payload.get("poll")):
        raise ApiError(400, 50006, "Cannot send an empty message")
