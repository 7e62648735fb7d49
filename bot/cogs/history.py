"""`/imagine-history`: privately, the member's own recent jobs in this server (or in DMs), newest first,
ten a page, with Previous and Next.

The page buttons are persistent (`DynamicItem`): the custom id carries the member and the page, and
`interaction_check` lets only that member turn it (the answer is private, but a custom id is only
text). Each press reads the database again, so a page is always current; a job that a new one pushed
onto the next page shows up there. Nothing of another member is ever read.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import discord
from discord import app_commands
from discord.ext import commands

from bot.delivery import NO_MENTIONS, reply_privately
from bot.i18n import DEFAULT, resolve, t
from bot.i18n.commands import en
from bot.jobs.model import JobRecord, JobState
from bot.links import message_url
from bot.render import BRAND
from bot.services import services
from bot.storage.base import Storage

PAGE_SIZE = 10
PROMPT_SHOWN = 80  # characters of each prompt on a page: ten lines stay well inside an embed
# What a member reads for each state: finished ones by how they ended, the rest as in progress.
OUTCOMES = {
    JobState.DELIVERED: "history.delivered",
    JobState.FAILED: "history.failed",
    JobState.UNCONFIRMED: "history.unconfirmed",
    JobState.CANCELLED: "history.cancelled",
}


def shorten(prompt: str, limit: int = PROMPT_SHOWN) -> str:
    """One line of the prompt, markdown escaped (so a prompt cannot make a link or a heading)."""
    line = " ".join(prompt.split())
    if len(line) > limit:
        line = line[: limit - 1].rstrip() + "…"
    return discord.utils.escape_markdown(line)


def entry(job: JobRecord, locale: str) -> str:
    when = discord.utils.format_dt(datetime.fromtimestamp(job.created_at, UTC), "R")
    outcome = t(locale, OUTCOMES.get(job.state, "history.running"))
    text = f"{when} · {outcome} · {shorten(job.params.prompt)}"
    # The placeholder: it became the result, or (a result posted later as a new message, or sent by
    # DM when the channel refused it) it says where the result went. A DM's id would make a broken
    # link with the server's channel.
    url = message_url(job.guild_id, job.channel_id, job.message_id or job.result_message_id)
    if url is not None and job.state is not JobState.CANCELLED:
        text += f" · [{t(locale, 'history.open')}]({url})"
    return "- " + text


def history_embed(jobs: list[JobRecord], page: int, locale: str) -> discord.Embed:
    embed = discord.Embed(title=t(locale, "history.title"), colour=BRAND)
    if not jobs:
        key = "history.empty" if page == 0 else "history.no_more"
        embed.description = t(locale, key)
        return embed
    embed.description = "\n".join(entry(job, locale) for job in jobs[:PAGE_SIZE])
    embed.set_footer(text=t(locale, "history.page", page=page + 1))
    return embed


class HistoryPage(
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]],
    template=r"imagine:history:(?P<user>[0-9]+):(?P<page>[0-9]+):(?P<way>prev|next)",
):
    def __init__(self, user_id: int, page: int, way: str, *, disabled: bool = False, locale: str = DEFAULT) -> None:
        button: discord.ui.Button[discord.ui.View] = discord.ui.Button(
            label=t(locale, f"history.{way}"),
            emoji="◀️" if way == "prev" else "▶️",
            style=discord.ButtonStyle.secondary,
            custom_id=f"imagine:history:{user_id}:{page}:{way}",
            disabled=disabled,
        )
        super().__init__(button)
        self.user_id, self.page = user_id, page

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[discord.ui.View], match: re.Match[str]
    ) -> HistoryPage:
        return cls(int(match["user"]), int(match["page"]), match["way"])

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if interaction.user.id == self.user_id:
            return True
        await reply_privately(interaction, t(resolve(interaction.locale), "history.not_yours"))
        return False

    async def callback(self, interaction: discord.Interaction) -> None:
        storage = services(interaction).storage
        embed, view = await history_page(storage, interaction, self.page)
        await interaction.response.edit_message(embed=embed, view=view, allowed_mentions=NO_MENTIONS)


async def history_page(
    storage: Storage, interaction: discord.Interaction, page: int
) -> tuple[discord.Embed, discord.ui.View]:
    """Page `page` (from 0) of the member's jobs where the interaction happens, and its buttons."""
    locale = resolve(interaction.locale)
    user_id = interaction.user.id
    # One more than a page: whether there is a next one, without counting.
    jobs = await storage.history(
        user_id=user_id, guild_id=interaction.guild_id, limit=PAGE_SIZE + 1, offset=page * PAGE_SIZE
    )
    view = discord.ui.View(timeout=None)
    view.add_item(HistoryPage(user_id, max(0, page - 1), "prev", disabled=page == 0, locale=locale))
    view.add_item(HistoryPage(user_id, page + 1, "next", disabled=len(jobs) <= PAGE_SIZE, locale=locale))
    return history_embed(jobs, page, locale), view


class HistoryCog(commands.Cog):
    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    @app_commands.command(name="imagine-history", description=en("command.imagine-history.description"))
    async def history(self, interaction: discord.Interaction) -> None:
        embed, view = await history_page(self._storage, interaction, 0)
        await interaction.response.send_message(embed=embed, view=view, ephemeral=True, allowed_mentions=NO_MENTIONS)
