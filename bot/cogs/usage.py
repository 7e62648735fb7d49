"""`/usage`: a member's own usage, limits and what is left; server totals and spend for managers."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import discord
from discord import app_commands
from discord.ext import commands

from bot.delivery import NO_MENTIONS
from bot.i18n import DEFAULT, Money, resolve, t
from bot.i18n.commands import en
from bot.limits import Limits, Usage, next_utc_midnight, window_frees_at
from bot.ops.balance import Reading
from bot.render import BRAND, window_text
from bot.storage.base import Storage, Totals


def _of(used: int, limit: int, locale: str) -> str:
    if not limit:
        return t(locale, "usage.no_limit", count=used)
    return t(locale, "usage.of", used=used, limit=limit, count=max(0, limit - used))


def _ts(at: float) -> str:
    return discord.utils.format_dt(datetime.fromtimestamp(at, UTC), "R")


def _spend(locale: str, key: str, images: int, price: float) -> str:
    return t(locale, key, count=images, spend=Money(f"{images * price:.2f}"))


def usage_embed(
    limits: Limits,
    usage: Usage,
    mine: Totals,
    *,
    now: float,
    guild: Totals | None,
    price: float,
    in_guild: bool,
    balance: Reading | None = None,
    locale: str = DEFAULT,
) -> discord.Embed:
    """Everything counts images. `guild` is given only to members who may see the server's totals.
    A server sees only its own figures: the whole bot's total (every server's) is the host's business,
    logged by the bot's housekeeping, never shown in a server."""
    embed = discord.Embed(title=t(locale, "usage.title"), colour=BRAND)
    window = window_text(limits.user_window_seconds, locale)
    lines = [
        t(locale, "usage.active", value=_of(usage.user_active, limits.user_active_images, locale)),
        t(locale, "usage.window", window=window, value=_of(usage.user_window_total, limits.user_window_images, locale)),
        t(locale, "usage.today", today=mine.today, month=mine.last_30_days),
    ]
    if limits.user_window_images and usage.user_window_total >= limits.user_window_images:
        frees = window_frees_at(limits, usage, 1)
        if frees is not None:
            lines.append(t(locale, "usage.again", when=_ts(frees)))
    embed.add_field(name=t(locale, "usage.you"), value="\n".join(lines), inline=False)
    if in_guild:
        value = _of(usage.guild_today, limits.guild_daily_images, locale)
        resets = t(locale, "usage.resets", when=_ts(next_utc_midnight(now)))
        embed.add_field(name=t(locale, "usage.server_today"), value=f"{value} · {resets}", inline=False)
    if guild is not None:
        spend = [
            _spend(locale, "usage.spend_today", guild.today, price),
            _spend(locale, "usage.spend_7", guild.last_7_days, price),
            _spend(locale, "usage.spend_30", guild.last_30_days, price),
        ]
        embed.add_field(name=t(locale, "usage.server_totals"), value="\n".join(spend), inline=False)
        embed.set_footer(text=t(locale, "usage.footer", price=Money(str(price))))
        if balance is not None:
            key = "usage.balance_low" if balance.low else "usage.balance"
            amount = Money(f"{balance.dollars:.2f}")
            embed.add_field(
                name=t(locale, "usage.balance_title"),
                value=t(locale, key, amount=amount, when=_ts(balance.at)),
                inline=False,
            )
    return embed


class UsageCog(commands.Cog):
    def __init__(
        self,
        storage: Storage,
        *,
        limits: Limits,
        price_per_image: float,
        balance: Callable[[], Reading | None] | None = None,
    ) -> None:
        self._storage = storage
        self._balance = balance
        self._limits = limits
        self._price = price_per_image

    @app_commands.command(name="usage", description=en("command.usage.description"))
    async def usage(self, interaction: discord.Interaction) -> None:
        now = time.time()
        usage = await self._storage.usage_for(
            user_id=interaction.user.id,
            guild_id=interaction.guild_id,
            now=now,
            window_seconds=self._limits.user_window_seconds,
        )
        mine = await self._storage.totals(now=now, user_id=interaction.user.id)
        manager = interaction.guild_id is not None and interaction.permissions.manage_guild
        guild = await self._storage.totals(now=now, guild_id=interaction.guild_id) if manager else None
        embed = usage_embed(
            self._limits,
            usage,
            mine,
            now=now,
            guild=guild,
            price=self._price,
            in_guild=interaction.guild_id is not None,
            balance=self._balance() if manager and self._balance is not None else None,
            locale=resolve(interaction.locale),
        )
        await interaction.response.send_message(embed=embed, ephemeral=True, allowed_mentions=NO_MENTIONS)
