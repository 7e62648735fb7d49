"""`/imagine-admin`: each server's moderation settings. Limited by default to members with Manage
Server (a server can change that in its Integrations settings). Every answer is private."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.delivery import reply_privately
from bot.jobs.admission import DB_BUDGET
from bot.moderation.settings import GuildSettings, GuildSettingsStore
from bot.moderation.terms import InvalidTermError, check_room, make_term
from bot.render import BRAND
from bot.tasks import finish_anyway

log = logging.getLogger(__name__)

ChannelKind = Literal["normal", "age-restricted"]
TOLERANCES = [app_commands.Choice(name=v, value=v) for v in ("1", "2", "3", "4", "5")]
MAX_TERMS = 500
BUSY = (
    "⏳ The bot's database is busy right now, so the change is not saved yet; it will be once the "
    "database is free. Check with `/imagine-admin show` in a moment."
)


TEXT_CHANNELS = (
    discord.ChannelType.text,
    discord.ChannelType.news,
    discord.ChannelType.voice,
    discord.ChannelType.forum,
)


async def _is_text(interaction: discord.Interaction, channel: app_commands.AppCommandChannel) -> bool:
    """Options arrive as resolved channels (no cache needed); messages can only go to these kinds."""
    if channel.type in TEXT_CHANNELS:
        return True
    await reply_privately(interaction, "⚠️ Pick a text channel.")
    return False


def toggled(ids: tuple[int, ...], item: int, *, remove: bool) -> tuple[int, ...]:
    """The list with `item` added (once, at the end) or taken out."""
    return tuple(i for i in ids if i != item) if remove else tuple(dict.fromkeys((*ids, item)))


def settings_embed(settings: GuildSettings) -> discord.Embed:
    embed = discord.Embed(title="Moderation settings", colour=BRAND)
    embed.add_field(
        name="Flagged images",
        value=f"Normal channels: **{settings.nsfw_normal}**\nAge-restricted channels: **{settings.nsfw_age_restricted}**",
        inline=False,
    )
    embed.add_field(
        name="safety_tolerance cap",
        value=f"Normal channels: **{settings.max_tolerance_normal}**\n"
        f"Age-restricted channels: **{settings.max_tolerance_age_restricted}**",
        inline=False,
    )
    terms = len(settings.blocked_terms)
    regexes = sum(1 for t in settings.blocked_terms if t.regex)
    embed.add_field(name="Blocked terms", value=f"{terms} ({regexes} regular expressions)", inline=True)
    roles = ", ".join(f"<@&{r}>" for r in settings.allowed_role_ids) or "everyone"
    channels = ", ".join(f"<#{c}>" for c in settings.allowed_channel_ids) or "every channel"
    embed.add_field(name="Who may use it", value=f"Roles: {roles}\nChannels: {channels}", inline=False)
    log_channel = f"<#{settings.log_channel_id}>" if settings.log_channel_id else "off"
    embed.add_field(name="Moderation log", value=log_channel, inline=True)
    embed.add_field(name="Re-roll and Edit", value=settings.actions_by, inline=True)
    return embed


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class AdminCog(commands.GroupCog, group_name="imagine-admin", group_description="Moderation settings for /imagine"):
    def __init__(self, settings: GuildSettingsStore) -> None:
        self._settings = settings
        super().__init__()

    async def _save(self, interaction: discord.Interaction, done: str, **changes: object) -> None:
        assert interaction.guild_id is not None
        if await self._written(interaction, self._settings.update(interaction.guild_id, **changes)) is None:
            return
        log.info("guild %s: %s (by user %s)", interaction.guild_id, done, interaction.user.id)
        await reply_privately(interaction, f"✅ {done}")

    async def _written(self, interaction: discord.Interaction, write: Awaitable[GuildSettings]) -> GuildSettings | None:
        """The saved settings; or None, having told the admin, when a database locked by another
        process would make Discord show "the application did not respond". The write still lands
        once the database is free."""
        try:
            async with asyncio.timeout(DB_BUDGET):
                return await finish_anyway(write)
        except TimeoutError:
            log.warning("guild %s: a settings change waits for a busy database", interaction.guild_id)
            await reply_privately(interaction, BUSY)
            return None

    @app_commands.command(name="show", description="Show every moderation setting")
    async def show(self, interaction: discord.Interaction) -> None:
        settings = await self._settings.get(interaction.guild_id)
        await interaction.response.send_message(embed=settings_embed(settings), ephemeral=True)

    @app_commands.command(name="nsfw", description="What happens to images flagged as possibly sensitive")
    @app_commands.describe(
        channel_kind="Channels that are age-restricted or not",
        policy="spoiler: behind a spoiler; withhold (normal channels): not posted; show (age-restricted): plainly",
    )
    async def nsfw(
        self,
        interaction: discord.Interaction,
        channel_kind: ChannelKind,
        policy: Literal["spoiler", "withhold", "show"],
    ) -> None:
        if channel_kind == "normal" and policy == "show":
            await reply_privately(
                interaction, "⚠️ Flagged images are never shown plainly outside age-restricted channels."
            )
            return
        if channel_kind == "age-restricted" and policy == "withhold":
            await reply_privately(interaction, "⚠️ For age-restricted channels choose `spoiler` or `show`.")
            return
        field = "nsfw_normal" if channel_kind == "normal" else "nsfw_age_restricted"
        await self._save(interaction, f"Flagged images in {channel_kind} channels: {policy}.", **{field: policy})

    @app_commands.command(name="tolerance-cap", description="The highest safety_tolerance members may ask for")
    @app_commands.choices(value=TOLERANCES)
    async def tolerance_cap(self, interaction: discord.Interaction, channel_kind: ChannelKind, value: str) -> None:
        field = "max_tolerance_normal" if channel_kind == "normal" else "max_tolerance_age_restricted"
        await self._save(interaction, f"safety_tolerance cap in {channel_kind} channels: {value}.", **{field: value})

    @app_commands.command(name="log-channel", description="Where every generation, refusal and deletion is logged")
    @app_commands.describe(channel="Leave empty to turn the log off")
    async def log_channel(
        self, interaction: discord.Interaction, channel: app_commands.AppCommandChannel | None = None
    ) -> None:
        if channel is not None and not await _is_text(interaction, channel):
            return
        done = f"Moderation log: {channel.mention}." if channel else "Moderation log turned off."
        await self._save(interaction, done, log_channel_id=channel.id if channel else None)

    @app_commands.command(name="block", description="Refuse prompts containing a word, phrase or regular expression")
    @app_commands.describe(
        term="A word or phrase (or a regular expression)", regex="Treat the term as a regular expression"
    )
    async def block(self, interaction: discord.Interaction, term: str, regex: bool = False) -> None:
        settings = await self._settings.get(interaction.guild_id)
        try:
            blocked = make_term(term, regex=regex)
        except InvalidTermError as error:
            await reply_privately(interaction, f"⚠️ Not added: {error}")
            return
        if blocked in settings.blocked_terms:
            await reply_privately(interaction, "That term is already blocked.")
            return
        if len(settings.blocked_terms) >= MAX_TERMS:
            await reply_privately(interaction, f"⚠️ Not added: the list is full ({MAX_TERMS} terms).")
            return
        try:
            check_room(settings.blocked_terms, blocked)  # the regexes' time budget, for the whole list
        except InvalidTermError as error:
            await reply_privately(interaction, f"⚠️ Not added: {error}")
            return
        await self._save(interaction, "Term blocked.", blocked_terms=(*settings.blocked_terms, blocked))

    @app_commands.command(name="unblock", description="Remove a blocked term")
    async def unblock(self, interaction: discord.Interaction, term: str) -> None:
        settings = await self._settings.get(interaction.guild_id)
        kept = tuple(t for t in settings.blocked_terms if t.text != term.strip())
        if len(kept) == len(settings.blocked_terms):
            await reply_privately(interaction, "That term isn't on the list.")
            return
        await self._save(interaction, "Term removed.", blocked_terms=kept)

    @app_commands.command(name="blocked-list", description="List the blocked terms (only you see it)")
    async def blocked_list(self, interaction: discord.Interaction) -> None:
        settings = await self._settings.get(interaction.guild_id)
        lines = [f"`{t.text}`{' (regex)' if t.regex else ''}" for t in settings.blocked_terms]
        await reply_privately(interaction, ("\n".join(lines) or "No blocked terms.")[:1900])

    @app_commands.command(name="allow-role", description="Limit /imagine to members with these roles")
    @app_commands.describe(remove="Take the role off the list instead")
    async def allow_role(self, interaction: discord.Interaction, role: discord.Role, remove: bool = False) -> None:
        current = (await self._settings.get(interaction.guild_id)).allowed_role_ids
        roles = toggled(current, role.id, remove=remove)
        what = "everyone" if not roles else ", ".join(f"<@&{r}>" for r in roles)
        await self._save(interaction, f"/imagine is for: {what}.", allowed_role_ids=roles)

    @app_commands.command(name="allow-channel", description="Limit /imagine to these channels")
    @app_commands.describe(remove="Take the channel off the list instead")
    async def allow_channel(
        self, interaction: discord.Interaction, channel: app_commands.AppCommandChannel, remove: bool = False
    ) -> None:
        if not await _is_text(interaction, channel):
            return
        current = (await self._settings.get(interaction.guild_id)).allowed_channel_ids
        ids = toggled(current, channel.id, remove=remove)
        where = "every channel" if not ids else ", ".join(f"<#{c}>" for c in ids)
        await self._save(interaction, f"/imagine works in: {where}.", allowed_channel_ids=ids)

    @app_commands.command(name="actions", description="Who may press Re-roll and Edit on someone else's result")
    @app_commands.describe(who="anyone: good for brainstorming; requester: only the member who asked")
    async def actions(self, interaction: discord.Interaction, who: Literal["anyone", "requester"]) -> None:
        await self._save(interaction, f"Re-roll and Edit on a result: {who}.", actions_by=who)

    @app_commands.command(name="reset", description="Put every moderation setting back to its default")
    async def reset(self, interaction: discord.Interaction) -> None:
        assert interaction.guild_id is not None
        settings = await self._written(interaction, self._settings.reset(interaction.guild_id))
        if settings is None:
            return
        log.info("guild %s: moderation settings reset (by user %s)", interaction.guild_id, interaction.user.id)
        await interaction.response.send_message(
            "✅ Every setting is back to its default.", embed=settings_embed(settings), ephemeral=True
        )
