"""The moderation log: one entry per generation, blocked-terms refusal and deletion, in the channel
each server picks. Entries mention nobody; a log that cannot be posted never fails a job."""

from __future__ import annotations

import logging

import discord

from bot.delivery import NO_MENTIONS
from bot.jobs.model import JobRecord
from bot.jobs.outputs import PreparedOutputs
from bot.moderation.settings import GuildSettingsStore
from bot.render import BRAND, FAILED, discord_files, options_line, quote_prompt
from bot.wavespeed.models import Prediction

log = logging.getLogger(__name__)


def _who_where(embed: discord.Embed, user_id: int, channel_id: int | None) -> None:
    embed.add_field(name="Requester", value=f"<@{user_id}> (`{user_id}`)", inline=True)
    if channel_id is not None:
        embed.add_field(name="Channel", value=f"<#{channel_id}>", inline=True)


def generation_entry(
    job: JobRecord, prediction: Prediction, outputs: PreparedOutputs, url: str | None
) -> discord.Embed:
    embed = discord.Embed(title="Image generated", description=quote_prompt(job.params.prompt, 1500), colour=BRAND)
    _who_where(embed, job.user_id, job.channel_id)
    embed.add_field(name="Options", value=options_line(job.params), inline=False)
    embed.add_field(name="Prediction", value=f"`{prediction.id}`", inline=True)
    flags = " ".join("🚩" if flagged else "✅" for flagged in outputs.flags) or "none"
    embed.add_field(name="NSFW flags", value=f"{flags} ({outputs.flagged_count} flagged)", inline=True)
    if outputs.withheld:
        embed.add_field(name="Withheld", value=", ".join(f"#{n}" for n in outputs.withheld), inline=True)
    if url:
        embed.add_field(name="Message", value=f"[Jump to the result]({url})", inline=False)
    return embed


def refusal_entry(*, user_id: int, channel_id: int | None, prompt: str, reason: str) -> discord.Embed:
    embed = discord.Embed(title="Request refused", description=quote_prompt(prompt, 1500), colour=FAILED)
    _who_where(embed, user_id, channel_id)
    embed.add_field(name="Reason", value=reason, inline=False)
    return embed


def deletion_entry(job: JobRecord, *, by: int, url: str | None) -> discord.Embed:
    embed = discord.Embed(title="Result deleted", description=quote_prompt(job.params.prompt, 500), colour=FAILED)
    _who_where(embed, job.user_id, job.channel_id)
    embed.add_field(name="Deleted by", value=f"<@{by}> (`{by}`)", inline=True)
    if job.prediction_id:
        embed.add_field(name="Prediction", value=f"`{job.prediction_id}`", inline=True)
    if url:
        embed.add_field(name="Was at", value=url, inline=False)
    return embed


class ModLog:
    def __init__(self, client: discord.Client, settings: GuildSettingsStore) -> None:
        self._client = client
        self._settings = settings

    async def post(self, guild_id: int | None, embed: discord.Embed, outputs: PreparedOutputs | None = None) -> None:
        if guild_id is None:
            return
        channel_id = (await self._settings.get(guild_id)).log_channel_id
        if channel_id is None:
            return
        # Moderators see every image, flagged ones behind a spoiler, withheld ones included.
        files = discord_files(outputs.files) if outputs else []
        try:
            channel = self._client.get_partial_messageable(channel_id)
            await channel.send(embed=embed, files=files, allowed_mentions=NO_MENTIONS)
        except discord.HTTPException as error:
            log.warning("could not post to the moderation log channel %s: %s", channel_id, error)
