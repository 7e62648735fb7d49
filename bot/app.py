"""The discord.py client: registers the cogs and syncs commands only when they changed."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence

import discord
from discord import app_commands
from discord.ext import commands

from bot.cogs.imagine import ImagineCog, on_tree_error
from bot.jobs.runner import JobRunner
from bot.store import Store

log = logging.getLogger(__name__)


class ImagineBot(commands.Bot):
    def __init__(self, *, store: Store, runner: JobRunner, guild_ids: Sequence[int] = ()) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned,
            help_command=None,
            # Interactions arrive without any intent; `guilds` keeps the channel cache useful.
            intents=discord.Intents(guilds=True),
            # Nothing the bot sends pings anyone unless a call says so explicitly.
            allowed_mentions=discord.AllowedMentions.none(),
        )
        self.store = store
        self.runner = runner
        self.guild_ids = tuple(guild_ids)
        self.commands_synced: list[str] = []

    async def setup_hook(self) -> None:
        await self.add_cog(ImagineCog(self.runner))
        self.tree.error(on_tree_error)
        self.commands_synced = await sync_commands_if_changed(self.tree, self.store, self.guild_ids)

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
