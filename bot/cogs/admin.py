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
from bot.i18n import DEFAULT, resolve, t
from bot.i18n.commands import described, en
from bot.jobs.admission import DB_BUDGET
from bot.moderation.settings import GuildSettings, GuildSettingsStore
from bot.moderation.terms import InvalidTermError, check_room, make_term
from bot.render import BRAND, term_error_text
from bot.tasks import finish_anyway

log = logging.getLogger(__name__)

ChannelKind = Literal["normal", "age-restricted"]
TOLERANCES = [app_commands.Choice(name=en(f"choice.{v}"), value=v) for v in ("1", "2", "3", "4", "5")]
MAX_TERMS = 500


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
    await reply_privately(interaction, "⚠️ " + t(resolve(interaction.locale), "admin.pick_text_channel"))
    return False


def toggled(ids: tuple[int, ...], item: int, *, remove: bool) -> tuple[int, ...]:
    """The list with `item` added (once, at the end) or taken out."""
    return tuple(i for i in ids if i != item) if remove else tuple(dict.fromkeys((*ids, item)))


def settings_embed(settings: GuildSettings, locale: str = DEFAULT) -> discord.Embed:
    def kinds(normal: str, restricted: str) -> str:
        return t(locale, "admin.settings.kinds", normal=normal, restricted=restricted)

    def choice(value: str) -> str:
        return t(locale, f"choice.{value}")

    embed = discord.Embed(title=t(locale, "admin.settings.title"), colour=BRAND)
    nsfw = kinds(choice(settings.nsfw_normal), choice(settings.nsfw_age_restricted))
    embed.add_field(name=t(locale, "admin.settings.flagged"), value=nsfw, inline=False)
    caps = kinds(settings.max_tolerance_normal, settings.max_tolerance_age_restricted)
    embed.add_field(name=t(locale, "admin.settings.cap"), value=caps, inline=False)
    regexes = sum(1 for term in settings.blocked_terms if term.regex)
    terms = t(locale, "admin.settings.terms", terms=len(settings.blocked_terms), count=regexes)
    embed.add_field(name=t(locale, "admin.settings.terms_title"), value=terms, inline=True)
    roles = ", ".join(f"<@&{r}>" for r in settings.allowed_role_ids) or t(locale, "admin.everyone")
    channels = ", ".join(f"<#{c}>" for c in settings.allowed_channel_ids) or t(locale, "admin.every_channel")
    who = t(locale, "admin.settings.roles_channels", roles=roles, channels=channels)
    embed.add_field(name=t(locale, "admin.settings.who"), value=who, inline=False)
    log_channel = f"<#{settings.log_channel_id}>" if settings.log_channel_id else t(locale, "admin.off")
    embed.add_field(name=t(locale, "admin.settings.log"), value=log_channel, inline=True)
    embed.add_field(name=t(locale, "admin.settings.actions"), value=choice(settings.actions_by), inline=True)
    return embed


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class AdminCog(
    commands.GroupCog, group_name="imagine-admin", group_description=en("command.imagine-admin.description")
):
    def __init__(self, settings: GuildSettingsStore) -> None:
        self._settings = settings
        super().__init__()

    async def _save(
        self, interaction: discord.Interaction, key: str, values: dict[str, object], **changes: object
    ) -> None:
        """Save `changes` and tell the admin, in their language, what the catalogue's `key` says."""
        assert interaction.guild_id is not None
        done = t(resolve(interaction.locale), key, **values)
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
            await reply_privately(interaction, "⏳ " + t(resolve(interaction.locale), "admin.busy"))
            return None

    @app_commands.command(name="show", description=en("command.imagine-admin.show.description"))
    async def show(self, interaction: discord.Interaction) -> None:
        settings = await self._settings.get(interaction.guild_id)
        embed = settings_embed(settings, resolve(interaction.locale))
        await interaction.response.send_message(embed=embed, ephemeral=True)

    @app_commands.command(name="nsfw", description=en("command.imagine-admin.nsfw.description"))
    @app_commands.describe(**described("imagine-admin.nsfw", ("channel_kind", "policy")))
    async def nsfw(
        self,
        interaction: discord.Interaction,
        channel_kind: ChannelKind,
        policy: Literal["spoiler", "withhold", "show"],
    ) -> None:
        locale = resolve(interaction.locale)
        if channel_kind == "normal" and policy == "show":
            await reply_privately(interaction, "⚠️ " + t(locale, "admin.never_plain"))
            return
        if channel_kind == "age-restricted" and policy == "withhold":
            choices = {"spoiler": t(locale, "choice.spoiler"), "show": t(locale, "choice.show")}
            await reply_privately(interaction, "⚠️ " + t(locale, "admin.restricted_choose", **choices))
            return
        field = "nsfw_normal" if channel_kind == "normal" else "nsfw_age_restricted"
        key = f"admin.done.nsfw.{channel_kind}"
        await self._save(interaction, key, {"policy": t(locale, f"choice.{policy}")}, **{field: policy})

    @app_commands.command(name="tolerance-cap", description=en("command.imagine-admin.tolerance-cap.description"))
    @app_commands.describe(**described("imagine-admin.tolerance-cap", ("channel_kind", "value")))
    @app_commands.choices(value=TOLERANCES)
    async def tolerance_cap(self, interaction: discord.Interaction, channel_kind: ChannelKind, value: str) -> None:
        field = "max_tolerance_normal" if channel_kind == "normal" else "max_tolerance_age_restricted"
        await self._save(interaction, f"admin.done.cap.{channel_kind}", {"value": value}, **{field: value})

    @app_commands.command(name="log-channel", description=en("command.imagine-admin.log-channel.description"))
    @app_commands.describe(**described("imagine-admin.log-channel", ("channel",)))
    async def log_channel(
        self, interaction: discord.Interaction, channel: app_commands.AppCommandChannel | None = None
    ) -> None:
        if channel is not None and not await _is_text(interaction, channel):
            return
        if channel is None:
            await self._save(interaction, "admin.done.log_off", {}, log_channel_id=None)
        else:
            await self._save(interaction, "admin.done.log", {"channel": channel.mention}, log_channel_id=channel.id)

    @app_commands.command(name="block", description=en("command.imagine-admin.block.description"))
    @app_commands.describe(**described("imagine-admin.block", ("term", "regex")))
    async def block(self, interaction: discord.Interaction, term: str, regex: bool = False) -> None:
        locale = resolve(interaction.locale)
        settings = await self._settings.get(interaction.guild_id)
        try:
            blocked = make_term(term, regex=regex)
            if blocked in settings.blocked_terms:
                await reply_privately(interaction, t(locale, "admin.already"))
                return
            if len(settings.blocked_terms) >= MAX_TERMS:
                await reply_privately(interaction, "⚠️ " + t(locale, "admin.full", count=MAX_TERMS))
                return
            check_room(settings.blocked_terms, blocked)  # the regexes' time budget, for the whole list
        except InvalidTermError as error:
            await reply_privately(
                interaction, "⚠️ " + t(locale, "admin.not_added", reason=term_error_text(error, locale))
            )
            return
        await self._save(interaction, "admin.done.blocked", {}, blocked_terms=(*settings.blocked_terms, blocked))

    @app_commands.command(name="unblock", description=en("command.imagine-admin.unblock.description"))
    @app_commands.describe(**described("imagine-admin.unblock", ("term",)))
    async def unblock(self, interaction: discord.Interaction, term: str) -> None:
        settings = await self._settings.get(interaction.guild_id)
        kept = tuple(blocked for blocked in settings.blocked_terms if blocked.text != term.strip())
        if len(kept) == len(settings.blocked_terms):
            await reply_privately(interaction, t(resolve(interaction.locale), "admin.not_listed"))
            return
        await self._save(interaction, "admin.done.removed", {}, blocked_terms=kept)

    @app_commands.command(name="blocked-list", description=en("command.imagine-admin.blocked-list.description"))
    async def blocked_list(self, interaction: discord.Interaction) -> None:
        locale = resolve(interaction.locale)
        settings = await self._settings.get(interaction.guild_id)
        lines = [
            t(locale, "admin.list.regex", term=f"`{b.text}`") if b.regex else f"`{b.text}`"
            for b in settings.blocked_terms
        ]
        await reply_privately(interaction, ("\n".join(lines) or t(locale, "admin.list.empty"))[:1900])

    @app_commands.command(name="allow-role", description=en("command.imagine-admin.allow-role.description"))
    @app_commands.describe(**described("imagine-admin.allow-role", ("role", "remove")))
    async def allow_role(self, interaction: discord.Interaction, role: discord.Role, remove: bool = False) -> None:
        current = (await self._settings.get(interaction.guild_id)).allowed_role_ids
        roles = toggled(current, role.id, remove=remove)
        what = ", ".join(f"<@&{r}>" for r in roles) or t(resolve(interaction.locale), "admin.everyone")
        await self._save(interaction, "admin.done.roles", {"what": what}, allowed_role_ids=roles)

    @app_commands.command(name="allow-channel", description=en("command.imagine-admin.allow-channel.description"))
    @app_commands.describe(**described("imagine-admin.allow-channel", ("channel", "remove")))
    async def allow_channel(
        self, interaction: discord.Interaction, channel: app_commands.AppCommandChannel, remove: bool = False
    ) -> None:
        if not await _is_text(interaction, channel):
            return
        current = (await self._settings.get(interaction.guild_id)).allowed_channel_ids
        ids = toggled(current, channel.id, remove=remove)
        where = ", ".join(f"<#{c}>" for c in ids) or t(resolve(interaction.locale), "admin.every_channel")
        await self._save(interaction, "admin.done.channels", {"where": where}, allowed_channel_ids=ids)

    @app_commands.command(name="actions", description=en("command.imagine-admin.actions.description"))
    @app_commands.describe(**described("imagine-admin.actions", ("who",)))
    async def actions(self, interaction: discord.Interaction, who: Literal["anyone", "requester"]) -> None:
        shown = t(resolve(interaction.locale), f"choice.{who}")
        await self._save(interaction, "admin.done.actions", {"who": shown}, actions_by=who)

    @app_commands.command(name="reset", description=en("command.imagine-admin.reset.description"))
    async def reset(self, interaction: discord.Interaction) -> None:
        assert interaction.guild_id is not None
        settings = await self._written(interaction, self._settings.reset(interaction.guild_id))
        if settings is None:
            return
        log.info("guild %s: moderation settings reset (by user %s)", interaction.guild_id, interaction.user.id)
        locale = resolve(interaction.locale)
        await interaction.response.send_message(
            "✅ " + t(locale, "admin.done.reset"), embed=settings_embed(settings, locale), ephemeral=True
        )
