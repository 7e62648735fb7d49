"""The Cancel button on a queued job's placeholder. Persistent: its custom id carries the job id and
the class is registered at start-up, so it works after a restart for as long as the job waits."""

from __future__ import annotations

import logging
import re

import discord

from bot import render
from bot.delivery import NO_MENTIONS, reply_privately
from bot.services import services

log = logging.getLogger(__name__)


class CancelButton(
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]], template=r"imagine:cancel:(?P<job>[0-9]+)"
):
    def __init__(self, job_id: int) -> None:
        super().__init__(
            discord.ui.Button(label="Cancel", style=discord.ButtonStyle.secondary, custom_id=f"imagine:cancel:{job_id}")
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[discord.ui.View], match: re.Match[str]
    ) -> CancelButton:
        return cls(int(match["job"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        bot = services(interaction)
        try:
            job = await bot.storage.get_job(self.job_id)
        except KeyError:
            await reply_privately(interaction, "This request is no longer on record.")
            return
        if interaction.user.id != job.user_id and not interaction.permissions.manage_messages:
            await reply_privately(
                interaction, "Only the member who asked for this image, or a moderator, can cancel it."
            )
            return
        cancelled = await bot.dispatcher.cancel(job.id)
        if cancelled is None:
            await reply_privately(interaction, "This request has already started, so it can't be cancelled any more.")
            return
        log.info("job %s cancelled by user %s", job.id, interaction.user.id)
        bot.metrics.job_finished("cancelled")
        by = "you" if interaction.user.id == job.user_id else interaction.user.mention
        await interaction.response.edit_message(
            embed=render.cancelled_embed(job.params, by=by), view=None, allowed_mentions=NO_MENTIONS
        )


def cancel_view(job_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job_id))
    return view
