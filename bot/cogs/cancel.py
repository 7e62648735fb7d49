"""The Cancel button on a queued job's placeholder. Persistent: its custom id carries the job id and
the class is registered at start-up, so it works after a restart for as long as the job waits."""

from __future__ import annotations

import logging
import re

import discord

from bot import render
from bot.delivery import NO_MENTIONS, reply_privately
from bot.i18n import DEFAULT, resolve, t
from bot.services import services

log = logging.getLogger(__name__)


class CancelButton(
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]], template=r"imagine:cancel:(?P<job>[0-9]+)"
):
    def __init__(self, job_id: int, locale: str = DEFAULT) -> None:
        label = t(locale, "button.cancel")
        super().__init__(
            discord.ui.Button(label=label, style=discord.ButtonStyle.secondary, custom_id=f"imagine:cancel:{job_id}")
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[discord.ui.View], match: re.Match[str]
    ) -> CancelButton:
        return cls(int(match["job"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        bot = services(interaction)
        locale = resolve(interaction.locale)
        try:
            job = await bot.storage.get_job(self.job_id)
        except KeyError:
            await reply_privately(interaction, t(locale, "cancel.gone"))
            return
        if interaction.user.id != job.user_id and not interaction.permissions.manage_messages:
            await reply_privately(interaction, t(locale, "cancel.not_allowed"))
            return
        cancelled = await bot.dispatcher.cancel(job.id)
        if cancelled is None:
            await reply_privately(interaction, t(locale, "cancel.started"))
            return
        log.info("job %s cancelled by user %s", job.id, interaction.user.id)
        bot.metrics.job_finished("cancelled")
        by = None if interaction.user.id == job.user_id else interaction.user.mention
        embed = render.cancelled_embed(job.params, by=by, locale=job.locale)
        await interaction.response.edit_message(embed=embed, view=None, allowed_mentions=NO_MENTIONS)


def cancel_view(job_id: int, locale: str = DEFAULT) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job_id, locale))
    return view
