"""`/usage`: a member's own usage, limits and what is left; server totals and spend for managers."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import discord
from discord import app_commands
from discord.ext import commands

from bot.delivery import NO_MENTIONS
from bot.limits import Limits, Usage, describe_window, next_utc_midnight, window_frees_at
from bot.ops.balance import Reading
from bot.render import BRAND
from bot.storage.base import Storage, Totals


def _of(used: int, limit: int) -> str:
    return f"{used} (no limit)" if not limit else f"{used} of {limit} · {max(0, limit - used)} left"


def _ts(at: float) -> str:
    return discord.utils.format_dt(datetime.fromtimestamp(at, UTC), "R")


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
) -> discord.Embed:
    """Everything counts images. `guild` is given only to members who may see the server's totals.
    A server sees only its own figures: the whole bot's total (every server's) is the host's business,
    logged by the bot's housekeeping, never shown in a server."""
    embed = discord.Embed(title="Your image usage", colour=BRAND)
    window = describe_window(limits.user_window_seconds)
    lines = [
        f"**In progress:** {_of(usage.user_active, limits.user_active_images)} at a time",
        f"**Last {window}:** {_of(usage.user_window_total, limits.user_window_images)}",
        f"**Today:** {mine.today} · last 30 days: {mine.last_30_days}",
    ]
    if limits.user_window_images and usage.user_window_total >= limits.user_window_images:
        frees = window_frees_at(limits, usage, 1)
        if frees is not None:
            lines.append(f"You can ask again {_ts(frees)}.")
    embed.add_field(name="You", value="\n".join(lines), inline=False)
    resets = f"resets {_ts(next_utc_midnight(now))}"
    if in_guild:
        embed.add_field(
            name="This server today",
            value=f"{_of(usage.guild_today, limits.guild_daily_images)} · {resets}",
            inline=False,
        )
    if guild is not None:
        spend = [
            f"**Today:** {guild.today} images · ${guild.today * price:,.2f}",
            f"**Last 7 days:** {guild.last_7_days} images · ${guild.last_7_days * price:,.2f}",
            f"**Last 30 days:** {guild.last_30_days} images · ${guild.last_30_days * price:,.2f}",
        ]
        embed.add_field(name="Server totals (estimated spend)", value="\n".join(spend), inline=False)
        embed.set_footer(text=f"Estimated at ${price:g} per image. Failed and cancelled requests cost nothing.")
        if balance is not None:
            low = " ⚠️ **low**: the host should top it up" if balance.low else ""
            embed.add_field(
                name="WaveSpeed balance (the bot's account)",
                value=f"${balance.dollars:,.2f}{low} · checked {_ts(balance.at)}",
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

    @app_commands.command(name="usage", description="How many images you've made, your limits and what's left")
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
        )
        await interaction.response.send_message(embed=embed, ephemeral=True, allowed_mentions=NO_MENTIONS)
