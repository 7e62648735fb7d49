"""`/imagine-forget-me`: erase what the bot stores about the member (every server and DMs), after a
confirmation button; what is erased and what is kept is `bot.storage.members`'s rule.

Jobs still waiting or running are never torn out from under the runner: the member chooses to
cancel the waiting ones now (their placeholders say so) or to let them finish. Either way, whatever
is still running is erased as soon as it ends: the request is noted in the database
(`set_pending_erasure`), and every process looks for such notes every few seconds, so a restart or
another process finishes the job. The buttons carry the member and the moment they asked: only that
member may press them, and only what existed then is erased.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from datetime import UTC, datetime

import discord
from discord import app_commands
from discord.ext import commands

from bot import render
from bot.delivery import NO_MENTIONS, Placeholder, reply_privately
from bot.i18n import DEFAULT, resolve, t
from bot.i18n.commands import en
from bot.jobs.model import JobState
from bot.limits import next_utc_midnight
from bot.render import BRAND
from bot.services import services
from bot.storage.base import Storage, start_of_day

log = logging.getLogger(__name__)

CHECK_EVERY = 2.0  # seconds between looks for erasures waiting on running jobs
CHOICES = ("erase", "cancel", "wait", "keep")


def keep_counts_since(now: float, window_seconds: float) -> float:
    """The oldest job a budget still counts: today's (UTC) and the member's rolling window's."""
    return min(start_of_day(now), now - window_seconds)


def _ts(at: float) -> str:
    return discord.utils.format_dt(datetime.fromtimestamp(at, UTC), "f")


class ForgetButton(
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]],
    template=r"imagine:forget:(?P<user>[0-9]+):(?P<at>[0-9]+):(?P<choice>erase|cancel|wait|keep)",
):
    def __init__(self, user_id: int, asked_at: int, choice: str, locale: str = DEFAULT) -> None:
        style = discord.ButtonStyle.secondary if choice == "keep" else discord.ButtonStyle.danger
        button: discord.ui.Button[discord.ui.View] = discord.ui.Button(
            label=t(locale, f"forget.{choice}"), style=style, custom_id=f"imagine:forget:{user_id}:{asked_at}:{choice}"
        )
        super().__init__(button)
        self.user_id, self.asked_at, self.choice = user_id, asked_at, choice

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[discord.ui.View], match: re.Match[str]
    ) -> ForgetButton:
        return cls(int(match["user"]), int(match["at"]), match["choice"])

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if interaction.user.id == self.user_id:
            return True
        await reply_privately(interaction, t(resolve(interaction.locale), "forget.not_yours"))
        return False

    async def callback(self, interaction: discord.Interaction) -> None:
        locale = resolve(interaction.locale)
        embed = discord.Embed(title=t(locale, "forget.title"), colour=BRAND)
        if self.choice == "keep":
            embed.description = t(locale, "forget.kept_nothing")
            await interaction.response.edit_message(embed=embed, view=None, allowed_mentions=NO_MENTIONS)
            return
        client = interaction.client
        cog = client.get_cog("ForgetCog") if isinstance(client, commands.Bot | commands.AutoShardedBot) else None
        if not isinstance(cog, ForgetCog):
            raise RuntimeError("the ForgetCog is not loaded")
        # Acknowledged first: erasing many jobs (zeroed on SQLite) may take longer than Discord's 3 seconds.
        await interaction.response.defer()
        embed.description = await cog.erase(interaction, float(self.asked_at), cancel=self.choice == "cancel")
        await interaction.edit_original_response(embed=embed, view=None, allowed_mentions=NO_MENTIONS)


class ForgetCog(commands.Cog):
    def __init__(self, storage: Storage, *, window_seconds: float) -> None:
        self._storage = storage
        self._window = window_seconds
        self._watch: asyncio.Task[None] | None = None

    async def cog_load(self) -> None:
        self._watch = asyncio.create_task(self._finish_pending(), name="pending erasures")

    async def cog_unload(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch

    @app_commands.command(name="imagine-forget-me", description=en("command.imagine-forget-me.description"))
    async def forget_me(self, interaction: discord.Interaction) -> None:
        locale = resolve(interaction.locale)
        asked_at = int(time.time()) + 1  # whole seconds in the button; +1 so this very moment is included
        finished, active = await self._storage.member_jobs(interaction.user.id, before=asked_at)
        embed = discord.Embed(title=t(locale, "forget.title"), colour=BRAND)
        if not finished and not active:
            embed.description = t(locale, "forget.nothing")
            await interaction.response.send_message(embed=embed, ephemeral=True, allowed_mentions=NO_MENTIONS)
            return
        lines = [
            t(locale, "forget.what"),
            t(locale, "forget.found", jobs=finished, active=len(active)),
            t(locale, "forget.kept"),
            t(locale, "forget.not_touched"),
        ]
        choices = ("cancel", "wait", "keep") if active else ("erase", "keep")
        if active:
            lines.append(t(locale, "forget.choose"))
        embed.description = "\n\n".join(lines)
        view = discord.ui.View(timeout=None)
        for choice in choices:
            view.add_item(ForgetButton(interaction.user.id, asked_at, choice, locale))
        await interaction.response.send_message(embed=embed, view=view, ephemeral=True, allowed_mentions=NO_MENTIONS)

    async def erase(self, interaction: discord.Interaction, asked_at: float, *, cancel: bool) -> str:
        """Cancel the waiting jobs if asked, erase what has ended, note what still runs; the answer."""
        locale = resolve(interaction.locale)
        user_id = interaction.user.id
        cancelled = 0
        if cancel:
            _, active = await self._storage.member_jobs(user_id, before=asked_at)
            for job in (job for job in active if job.state is JobState.QUEUED):
                if await services(interaction).dispatcher.cancel(job.id) is None:
                    continue  # it started meanwhile: it finishes, then is erased
                cancelled += 1
                services(interaction).metrics.job_finished("cancelled")
                try:  # the placeholder must not keep saying "Queued"
                    await Placeholder(interaction.client, job).edit(
                        render.cancelled_embed(job.params, by=None, locale=job.locale)
                    )
                except discord.HTTPException as error:
                    log.warning("could not show job %s as cancelled: %s", job.id, error)
        now = time.time()
        gone = await self._storage.forget_member(
            user_id, before=asked_at, keep_counts_since=keep_counts_since(now, self._window)
        )
        _, running = await self._storage.member_jobs(user_id, before=asked_at)
        if running:
            await self._storage.set_pending_erasure(user_id, asked_at)
        log.info("member %s erased: %d job(s) deleted, %d kept as counts", user_id, gone.deleted, gone.kept_counts)
        until = _ts(max(next_utc_midnight(now), now + self._window))
        lines = [t(locale, "forget.done", deleted=gone.deleted, kept=gone.kept_counts, when=until)]
        if cancel:
            lines.append(t(locale, "forget.cancelled", cancelled=cancelled))
        if running:
            lines.append(t(locale, "forget.later", running=len(running)))
        return "\n".join(lines)

    async def _finish_pending(self) -> None:
        """Erase, as soon as their jobs have ended, the members who chose to let them finish."""
        while True:
            try:
                for user_id, asked_at in await self._storage.pending_erasures():
                    _, running = await self._storage.member_jobs(user_id, before=asked_at)
                    if running:
                        continue
                    now = time.time()
                    since = keep_counts_since(now, self._window)
                    gone = await self._storage.forget_member(user_id, before=asked_at, keep_counts_since=since)
                    await self._storage.set_pending_erasure(user_id, None)
                    log.info("member %s erased after their last job: %d job(s) deleted", user_id, gone.deleted)
            except Exception:
                log.exception("could not finish the erasures waiting on running jobs; trying again")
            await asyncio.sleep(CHECK_EVERY)
