"""Reading what the fake Discord received: message texts and the edit that ends a job."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import discord

from tests.fakes.discord import FakeDiscord
from tests.fakes.recorder import Recorded

# A moderator: may change the server's settings and remove others' messages.
MANAGE = discord.Permissions(manage_guild=True, manage_messages=True).value
MODERATOR = 1310000000000000203

# Titles of the embeds that end a job: a result, a failure. "Paused" is not final: the job resumes.
FINAL_TITLES = {"✨ Imagined", "Couldn't make your image"}


def embeds_text(request: Recorded | dict[str, Any]) -> str:
    """The content, embed titles, descriptions and fields of a request (or a stored message)."""
    body = (request.json or {}) if isinstance(request, Recorded) else request
    data = body.get("data", body)  # an interaction callback nests the message under "data"
    parts = [data.get("content") or ""]
    for embed in data.get("embeds") or []:
        parts += [embed.get("title", ""), embed.get("description", "")]
        parts += [f"{f['name']}: {f['value']}" for f in embed.get("fields", [])]
    return "\n".join(parts)


def is_final_edit(request: Recorded, token: str) -> bool:
    if request.method != "PATCH" or token not in request.path or not isinstance(request.json, dict):
        return False
    return any(e.get("title", "") in FINAL_TITLES for e in request.json.get("embeds") or [])


async def wait_final_edit(discord: FakeDiscord, token: str, *, timeout: float = 20.0) -> Recorded:
    """The edit of the placeholder that ends the job: a result (files) or a failure."""
    return (await discord.requests.wait_for(lambda r: is_final_edit(r, token), timeout=timeout))[-1]


def messages_with_images(discord: FakeDiscord) -> list[dict[str, Any]]:
    """Every message, in any channel, that carries attachments: each is one delivery."""
    return [m for m in discord.messages.values() if m.get("attachments")]


def placeholder_title(discord: FakeDiscord, token: str) -> str:
    message = discord.original(token)
    assert message is not None, "the interaction was never answered"
    return str((message.get("embeds") or [{}])[0].get("title", ""))


async def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Check a condition we can't await (a file or database another task or process writes) until it
    holds or the deadline passes."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - no event to wait on: the writer is elsewhere
            await asyncio.sleep(0.05)


async def answered(fake: FakeDiscord, payload: dict[str, Any]) -> Recorded:
    """The first response to an interaction (a placeholder, a refusal, an update, a modal)."""
    [callback] = await fake.requests.wait_for(lambda r: r.path.endswith(f"/{payload['token']}/callback"))
    return callback


async def admin(fake: FakeDiscord, sub: str, *, locale: str = "en-US", **options: Any) -> str:
    """Run /imagine-admin <sub> as a moderator (whose client speaks `locale`); channels and roles are
    passed as ('channel'|'role', id). Returns the (private) answer's text."""
    payload = fake.interaction("imagine-admin", {}, user_id=MODERATOR, member_permissions=MANAGE, locale=locale)
    resolved: dict[str, dict[str, Any]] = {}
    rendered = []
    for name, value in options.items():
        if isinstance(value, tuple):
            kind, ident = value
            if kind == "channel":
                resolved.setdefault("channels", {})[str(ident)] = {
                    "id": str(ident), "type": 0, "name": f"c{ident % 1000}", "permissions": str(MANAGE),
                    "guild_id": str(fake.guild_id), "nsfw": False, "parent_id": None, "position": 0,
                }  # fmt: skip
                rendered.append({"name": name, "type": 7, "value": str(ident)})
            else:
                resolved.setdefault("roles", {})[str(ident)] = {
                    "id": str(ident), "name": "artists", "color": 0, "hoist": False, "position": 1,
                    "permissions": "0", "managed": False, "mentionable": False, "flags": 0,
                }  # fmt: skip
                rendered.append({"name": name, "type": 8, "value": str(ident)})
        else:
            kind_of = 5 if isinstance(value, bool) else 3
            rendered.append({"name": name, "type": kind_of, "value": value})
    payload["data"]["options"] = [{"type": 1, "name": sub, "options": rendered}]
    if resolved:
        payload["data"]["resolved"] = resolved
    await fake.dispatch_interaction(payload)
    reply = await answered(fake, payload)
    assert reply.json["data"]["flags"] & 64  # every admin answer is private
    return embeds_text(reply)
