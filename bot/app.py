"""The discord.py client: registers the cogs, wires the job engine to Discord, and syncs commands
only when they changed."""

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
from bot.cogs.cancel import CancelButton
from bot.cogs.forget import ForgetButton, ForgetCog, keep_counts_since
from bot.cogs.history import HistoryCog, HistoryPage
from bot.cogs.imagine import ImagineCog, on_tree_error
from bot.cogs.results import ResultButton
from bot.cogs.usage import UsageCog
from bot.config import Settings
from bot.i18n.commands import CatalogueTranslator
from bot.jobs.admission import Admission
from bot.jobs.dispatcher import Dispatcher
from bot.jobs.foreground import Foreground
from bot.jobs.memory import MIB
from bot.jobs.runner import JobRunner
from bot.metrics import NOOP, Metrics
from bot.moderation.log import ModLog
from bot.moderation.settings import GuildSettingsStore
from bot.ops.balance import BalanceWatch
from bot.ops.discord_errors import error_trace
from bot.presenter import DiscordPresenter
from bot.storage.base import Storage
from bot.wavespeed.client import WaveSpeedClient

log = logging.getLogger(__name__)

HOUSEKEEPING_INTERVAL = 3600.0
DISCORD_CONNECTIONS = 64
# The bot has no voice: discord.py's warnings that the voice libraries are missing are noise.
discord.VoiceClient.warn_nacl = False
discord.VoiceClient.warn_dave = False


class ImagineBot(commands.AutoShardedBot):
    def __init__(
        self,
        *,
        storage: Storage,
        wavespeed: WaveSpeedClient,
        settings: Settings,
        metrics: Metrics = NOOP,
        balance: BalanceWatch | None = None,
    ) -> None:
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
            # Empty: discord.py asks Discord how many shards and runs them all here. Several processes
            # each run their own SHARD_IDS of SHARD_COUNT.
            shard_count=settings.shard_count,
            http_trace=error_trace(metrics),  # Discord's error answers, counted by status and code
        )
        if settings.shard_ids:  # read when the shards launch
            self.shard_ids = list(settings.shard_ids)
        self.settings = settings
        self.metrics = metrics
        self.balance = balance
        self.storage = storage
        self.guild_settings = GuildSettingsStore(storage)
        self.modlog = ModLog(self, self.guild_settings)
        self.presenter = DiscordPresenter(self, storage, self.guild_settings, self.modlog)
        self.foreground = Foreground()  # commands being answered come first
        self.runner = JobRunner(
            wavespeed,
            storage,
            self.presenter,
            model=settings.wavespeed_model,
            edit_model=settings.wavespeed_edit_model,
            multi_model=settings.wavespeed_multi_model,
            timeout=settings.job_timeout_seconds,
            progress_interval=settings.progress_interval_seconds,
            foreground=self.foreground,
            delivery_memory=settings.delivery_memory_mb * MIB,
            metrics=metrics,
        )
        self.dispatcher = Dispatcher(
            storage, self.runner, self.presenter, capacity=settings.max_concurrent_jobs, foreground=self.foreground
        )
        self.admission = Admission(
            self.runner,
            self.dispatcher,
            storage,
            limits=settings.limits,
            access=settings.access,
            guild_settings=self.guild_settings,
            modlog=self.modlog,
            foreground=self.foreground,
            metrics=metrics,
        )
        self.guild_ids = tuple(settings.discord_guild_ids)
        self.retention_days = settings.job_retention_days
        self.commands_synced: list[str] = []
        self._housekeeping: asyncio.Task[None] | None = None

    async def setup_hook(self) -> None:
        await self.add_cog(ImagineCog(self.admission))
        await self.add_cog(AdminCog(self.guild_settings))
        await self.add_cog(HistoryCog(self.storage))
        await self.add_cog(ForgetCog(self.storage, window_seconds=self.settings.limits.user_window_seconds))
        watch = self.balance
        await self.add_cog(
            UsageCog(
                self.storage,
                limits=self.settings.limits,
                price_per_image=self.settings.price_per_image,
                balance=(lambda: watch.last) if watch is not None else None,
            )
        )
        self._set_contexts()
        await self.tree.set_translator(CatalogueTranslator())
        # Buttons that work on messages posted before a restart.
        self.add_dynamic_items(CancelButton, ResultButton, HistoryPage, ForgetButton)
        self.tree.error(on_tree_error)
        if self.settings.runs_shard_zero:  # one process syncs, not every one
            self.commands_synced = await sync_commands_if_changed(self.tree, self.storage, self.guild_ids)
        adopted = await self.dispatcher.start()
        if adopted:
            log.info("took over %d unfinished job(s)", adopted)
        self._housekeeping = asyncio.create_task(self._housekeeping_loop(), name="housekeeping")

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
                now = time.time()
                pruned = await self.storage.prune(older_than_days=self.retention_days, now=now)
                if pruned:
                    log.info("pruned %d job(s) older than %g days", pruned, self.retention_days)
                window = self.settings.limits.user_window_seconds
                counts = await self.storage.prune_forgotten(before=keep_counts_since(now, window))
                if counts:
                    log.info("deleted %d image count(s) kept for erased members: no budget counts them now", counts)
                today = await self.storage.images_today(now=now)
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
        await self.dispatcher.stop()
        await super().close()

    async def on_ready(self) -> None:
        log.info("connected as %s (application %s)", self.user, self.application_id)


async def commands_digest(tree: app_commands.CommandTree[discord.Client], guild: discord.Object | None) -> str:
    """A hash of what a sync would send, translations included: a changed catalogue re-syncs."""
    translator = tree.translator
    commands = tree.get_commands(guild=guild)
    if translator is None:
        payload = [command.to_dict(tree) for command in commands]
    else:
        payload = [await command.get_translated_payload(tree, translator) for command in commands]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


async def sync_commands_if_changed(
    tree: app_commands.CommandTree[discord.Client], store: Storage, guild_ids: Sequence[int]
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
        digest = await commands_digest(tree, guild)
        if await store.get_meta(key) == digest:
            log.info("commands for %s unchanged; not syncing", name)
            continue
        await tree.sync(guild=guild)
        await store.set_meta(key, digest)
        synced.append(name)
        log.info("synced commands for %s", name)
    return synced
