"""The discord.py client: registers the cogs and syncs commands only when they changed."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Sequence

import aiohttp
import discord
from discord import app_commands
from discord.ext import commands

from bot.cogs.admin import AdminCog
from bot.cogs.cancel import CancelButton, cancel_view
from bot.cogs.imagine import ImagineCog, on_tree_error
from bot.cogs.results import ResultButton, post_reply_placeholder, result_view
from bot.cogs.usage import UsageCog
from bot.config import Settings
from bot.delivery import Placeholder
from bot.jobs.admission import Admission
from bot.jobs.outputs import PreparedOutputs
from bot.jobs.runner import JobRunner, Reviewed
from bot.jobs.store import JobRecord, JobStore
from bot.jobs.usage import images_today
from bot.links import jump_url, message_url
from bot.moderation.log import ModLog, generation_entry
from bot.moderation.policy import apply_nsfw, nsfw_mode
from bot.moderation.settings import GuildSettingsStore
from bot.store import Store
from bot.wavespeed.client import WaveSpeedClient
from bot.wavespeed.models import Prediction

log = logging.getLogger(__name__)

HOUSEKEEPING_INTERVAL = 3600.0
DISCORD_CONNECTIONS = 64


class ImagineBot(commands.Bot):
    def __init__(self, *, store: Store, wavespeed: WaveSpeedClient, settings: Settings) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned,
            help_command=None,
            # Interactions arrive without any intent; `guilds` keeps the channel cache useful.
            intents=discord.Intents(guilds=True),
            # Nothing the bot sends pings anyone unless a call says so explicitly.
            allowed_mentions=discord.AllowedMentions.none(),
            # discord.py's default is unlimited connections: a burst of 1000 commands then holds 1000
            # sockets and their buffers. Discord allows ~50 requests/s anyway, so a bounded pool costs nothing.
            connector=aiohttp.TCPConnector(limit=DISCORD_CONNECTIONS),
        )
        self.store = store
        self.jobs = JobStore(store.db)
        self.guild_settings = GuildSettingsStore(store.db)
        self.modlog = ModLog(self, self.guild_settings)
        self.runner = JobRunner(
            wavespeed,
            self.jobs,
            targets=lambda job: Placeholder(self, job),
            model=settings.wavespeed_model,
            edit_model=settings.wavespeed_edit_model,
            timeout=settings.job_timeout_seconds,
            max_concurrent=settings.max_concurrent_jobs,
            progress_interval=settings.progress_interval_seconds,
            waiting_view=cancel_view,
            result_view=result_view,
            review=self._review,
            after_delivery=self._log_generation,
            find_placeholder=self._find_placeholder,
        )
        self.settings = settings
        self.admission = Admission(
            self.runner,
            self.jobs,
            limits=settings.limits,
            access=settings.access,
            guild_settings=self.guild_settings,
            modlog=self.modlog,
        )
        self.guild_ids = tuple(settings.discord_guild_ids)
        self.retention_days = settings.job_retention_days
        self.commands_synced: list[str] = []
        self._housekeeping: asyncio.Task[None] | None = None

    async def setup_hook(self) -> None:
        await self.add_cog(ImagineCog(self.admission))
        await self.add_cog(AdminCog(self.guild_settings))
        await self.add_cog(
            UsageCog(self.jobs, limits=self.settings.limits, price_per_image=self.settings.price_per_image)
        )
        self._set_contexts()
        self.add_dynamic_items(CancelButton, ResultButton)  # work on messages posted before a restart
        self.tree.error(on_tree_error)
        self.commands_synced = await sync_commands_if_changed(self.tree, self.store, self.guild_ids)
        resumed = await self.runner.recover()
        if resumed:
            log.info("resumed %d unfinished job(s) from the last run", resumed)
        self._housekeeping = asyncio.create_task(self._housekeeping_loop(), name="housekeeping")

    async def _find_placeholder(self, job: JobRecord) -> int | None:
        """After a crash around posting a job's placeholder: the message, if it was posted."""
        if job.interaction_token:
            return await Placeholder(self, job).find_original()
        if job.channel_id is None or job.source_job_id is None:
            return None
        # A reply placeholder: posting it again with its nonce returns the first one if it exists.
        try:
            source = await self.jobs.get(job.source_job_id)
        except KeyError:
            source = None
        reference = None
        if source is not None and (source.result_message_id or source.message_id):
            reference = discord.MessageReference(
                message_id=source.result_message_id or source.message_id or 0,
                channel_id=job.channel_id,
                fail_if_not_exists=False,
            )
        try:
            message = await post_reply_placeholder(self.get_partial_messageable(job.channel_id), job, reference)
        except discord.HTTPException:
            return None
        return message.id

    async def _review(self, job: JobRecord, outputs: PreparedOutputs) -> Reviewed:
        """The server's NSFW policy for the channel as it is now (it may have lost its age
        restriction while the job waited), and for a DM, which never is age-restricted."""
        settings = await self.guild_settings.get(job.guild_id)
        restricted = await self._age_restricted(job.channel_id)
        private = apply_nsfw(outputs, nsfw_mode(settings, age_restricted=False), age_restricted=False)
        if not restricted:
            return Reviewed(private, private)
        channel = apply_nsfw(outputs, nsfw_mode(settings, age_restricted=True), age_restricted=True)
        return Reviewed(channel, private)

    async def _age_restricted(self, channel_id: int | None) -> bool:
        """Whether the channel is age-restricted now: the gateway's cache, else Discord's answer.
        When it cannot be known, it is not (the safe side: flagged images keep their spoiler)."""
        if channel_id is None:
            return False
        channel = self.get_channel(channel_id)
        if channel is None:
            try:
                channel = await self.fetch_channel(channel_id)
            except (discord.HTTPException, discord.InvalidData) as error:
                log.warning("could not look up channel %s (%s); treating it as not age-restricted", channel_id, error)
                return False
        is_nsfw = getattr(channel, "is_nsfw", None)
        return bool(is_nsfw()) if callable(is_nsfw) else False

    async def _log_generation(
        self, job: JobRecord, prediction: Prediction, outputs: PreparedOutputs, sent: discord.Message | None
    ) -> None:
        url = jump_url(sent, job.guild_id) if sent else message_url(job.guild_id, job.channel_id, job.message_id)
        await self.modlog.post(job.guild_id, generation_entry(job, prediction, outputs, url), outputs)

    def _set_contexts(self) -> None:
        """Offer the commands in DMs only when ALLOW_DMS is on (a change re-syncs: it is in the hash)."""
        contexts = app_commands.AppCommandContext(guild=True, dm_channel=self.settings.allow_dms)
        for command in self.tree.get_commands():
            if command.name != "imagine-admin":  # guild-only by nature
                command.allowed_contexts = contexts

    async def _housekeeping_loop(self) -> None:
        """Hourly: delete jobs past retention, and log the whole bot's usage today (the one figure
        that spans servers, so no server is shown it)."""
        while True:
            try:
                pruned = await self.jobs.prune(older_than_days=self.retention_days)
                if pruned:
                    log.info("pruned %d job(s) older than %g days", pruned, self.retention_days)
                today = await images_today(self.jobs.db, now=time.time())
                budget = self.settings.global_daily_images or "no limit"
                log.info("usage: %d image(s) today across all servers (daily budget: %s)", today, budget)
            except Exception:
                log.exception("housekeeping failed; trying again in an hour")
            await asyncio.sleep(HOUSEKEEPING_INTERVAL)

    async def close(self) -> None:
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeping
        await super().close()

    async def on_ready(self) -> None:
        log.info("connected as %s (application %s)", self.user, self.application_id)


def commands_digest(tree: app_commands.CommandTree[discord.Client], guild: discord.Object | None) -> str:
    payload = [command.to_dict(tree) for command in tree.get_commands(guild=guild)]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


async def sync_commands_if_changed(
    tree: app_commands.CommandTree[discord.Client], store: Store, guild_ids: Sequence[int]
) -> list[str]:
    """Sync each scope whose command definitions differ from the last sync. Returns the scopes synced.

    Restarts then cost no command-sync requests, which Discord rate-limits tightly.
    """
    application_id = tree.client.application_id
    scopes: list[discord.Object | None] = [discord.Object(g) for g in guild_ids] or [None]
    synced = []
    for guild in scopes:
        if guild is not None:
            tree.copy_global_to(guild=guild)
        name = "global" if guild is None else f"guild {guild.id}"
        key = f"commands:{application_id}:{name}"
        digest = commands_digest(tree, guild)
        if await store.get_meta(key) == digest:
            log.info("commands for %s unchanged; not syncing", name)
            continue
        await tree.sync(guild=guild)
        await store.set_meta(key, digest)
        synced.append(name)
        log.info("synced commands for %s", name)
    return synced
