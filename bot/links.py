"""Links to Discord messages. discord.py's `Message.jump_url` puts `@me` (the DM address space)
in place of the server when it has no guild object for the message, which is the case for every
message the bot sends through a partial channel; so links are built from the ids the job knows."""

from __future__ import annotations

import discord


def message_url(guild_id: int | None, channel_id: int | None, message_id: int | None) -> str | None:
    """`https://discord.com/channels/<guild or @me>/<channel>/<message>`, or None without ids."""
    if channel_id is None or message_id is None:
        return None
    return f"https://discord.com/channels/{guild_id or '@me'}/{channel_id}/{message_id}"


def jump_url(message: discord.Message, guild_id: int | None) -> str:
    """The link to a message the bot sent for a job of `guild_id`: a DM keeps `@me`, anything
    else carries the server."""
    in_dm = isinstance(message.channel, discord.DMChannel) or getattr(message.channel, "type", None) in (
        discord.ChannelType.private,
        discord.ChannelType.group,
    )
    url = message_url(None if in_dm else guild_id, message.channel.id, message.id)
    assert url is not None
    return url
