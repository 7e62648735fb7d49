"""The moderation log: one entry per generation, blocked-terms refusal and deletion, in the channel
each server picks. Entries mention nobody; a log that cannot be posted never fails a job."""

from __future__ import annotations

import logging
from collections.abc import Callable

import discord

from bot.delivery import NO_MENTIONS
from bot.i18n import DEFAULT, t
from bot.jobs.model import JobRecord
from bot.jobs.outputs import OutputFile, PreparedOutputs
from bot.moderation.settings import GuildSettingsStore
from bot.render import BRAND, FAILED, discord_files, options_line, quote_prompt
from bot.wavespeed.models import Prediction

log = logging.getLogger(__name__)


def _who_where(embed: discord.Embed, user_id: int, channel_id: int | None, locale: str) -> None:
    embed.add_field(name=t(locale, "log.requester"), value=f"<@{user_id}> (`{user_id}`)", inline=True)
    if channel_id is not None:
        embed.add_field(name=t(locale, "log.channel"), value=f"<#{channel_id}>", inline=True)


def generation_entry(
    job: JobRecord, prediction: Prediction, outputs: PreparedOutputs, url: str | None, *, locale: str = DEFAULT
) -> discord.Embed:
    embed = discord.Embed(
        title=t(locale, "log.generated"), description=quote_prompt(job.params.prompt, 1500), colour=BRAND
    )
    _who_where(embed, job.user_id, job.channel_id, locale)
    embed.add_field(name=t(locale, "field.options"), value=options_line(job.params, locale), inline=False)
    embed.add_field(name=t(locale, "field.prediction"), value=f"`{prediction.id}`", inline=True)
    flags = " ".join("🚩" if flagged else "✅" for flagged in outputs.flags) or t(locale, "log.no_flags")
    embed.add_field(
        name=t(locale, "log.flags"),
        value=t(locale, "log.flagged", flags=flags, count=outputs.flagged_count),
        inline=True,
    )
    if outputs.withheld:
        embed.add_field(name=t(locale, "log.withheld"), value=", ".join(f"#{n}" for n in outputs.withheld), inline=True)
    if url:
        embed.add_field(name=t(locale, "log.message"), value=t(locale, "log.jump", url=url), inline=False)
    return embed


def refusal_entry(
    *, user_id: int, channel_id: int | None, prompt: str, term: str, regex: bool, locale: str = DEFAULT
) -> discord.Embed:
    embed = discord.Embed(title=t(locale, "log.refused"), description=quote_prompt(prompt, 1500), colour=FAILED)
    _who_where(embed, user_id, channel_id, locale)
    reason = t(locale, "log.blocked_regex" if regex else "log.blocked_term", term=f"`{term}`")
    embed.add_field(name=t(locale, "log.reason"), value=reason, inline=False)
    return embed


def deletion_entry(job: JobRecord, *, by: int, url: str | None) -> discord.Embed:
    locale = job.public_locale
    embed = discord.Embed(
        title=t(locale, "log.deleted"), description=quote_prompt(job.params.prompt, 500), colour=FAILED
    )
    _who_where(embed, job.user_id, job.channel_id, locale)
    embed.add_field(name=t(locale, "log.deleted_by"), value=f"<@{by}> (`{by}`)", inline=True)
    if job.prediction_id:
        embed.add_field(name=t(locale, "field.prediction"), value=f"`{job.prediction_id}`", inline=True)
    if url:
        embed.add_field(name=t(locale, "log.was_at"), value=url, inline=False)
    return embed


class ModLog:
    def __init__(self, client: discord.Client, settings: GuildSettingsStore) -> None:
        self._client = client
        self._settings = settings

    async def post(
        self,
        guild_id: int | None,
        embed: discord.Embed,
        outputs: PreparedOutputs | None = None,
        *,
        describe: Callable[[OutputFile], str] | None = None,
    ) -> None:
        if guild_id is None:
            return
        channel_id = (await self._settings.get(guild_id)).log_channel_id
        if channel_id is None:
            return
        # Moderators see every image, flagged ones behind a spoiler, withheld ones included.
        files = discord_files(outputs.files, describe) if outputs else []
        try:
            channel = self._client.get_partial_messageable(channel_id)
            await channel.send(embed=embed, files=files, allowed_mentions=NO_MENTIONS)
        except discord.HTTPException as error:
            log.warning("could not post to the moderation log channel %s: %s", channel_id, error)
