"""Buttons on a delivered result. Persistent: the custom id carries the job id and the classes are
registered at start-up, so they work for the life of the message, across restarts."""

from __future__ import annotations

import logging
import re

import discord

from bot.delivery import reply_privately
from bot.moderation.log import deletion_entry
from bot.services import services

log = logging.getLogger(__name__)


class DeleteButton(
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]], template=r"imagine:delete:(?P<job>[0-9]+)"
):
    def __init__(self, job_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Delete", emoji="🗑️", style=discord.ButtonStyle.secondary, custom_id=f"imagine:delete:{job_id}"
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[discord.ui.View], match: re.Match[str]
    ) -> DeleteButton:
        return cls(int(match["job"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        bot = services(interaction)
        try:
            job = await bot.jobs.get(self.job_id)
        except KeyError:
            job = None  # pruned: only a moderator may still remove the message
        is_requester = job is not None and interaction.user.id == job.user_id
        if not is_requester and not interaction.permissions.manage_messages:
            await reply_privately(
                interaction, "Only the member who asked for this image, or a moderator, can delete it."
            )
            return
        message = interaction.message
        if message is None:
            await reply_privately(interaction, "I couldn't find that message any more.")
            return
        try:
            await message.delete()
        except discord.HTTPException as error:
            log.warning("could not delete result message %s: %s", message.id, error)
            await reply_privately(interaction, "I couldn't delete that message. I may be missing Manage Messages here.")
            return
        log.info("result of job %s deleted by user %s", self.job_id, interaction.user.id)
        await reply_privately(interaction, "🗑️ Deleted.")
        if job is not None:
            await bot.modlog.post(job.guild_id, deletion_entry(job, by=interaction.user.id, url=message.jump_url))


def result_view(job_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(DeleteButton(job_id))
    return view
