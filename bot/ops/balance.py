"""The WaveSpeed balance, read every BALANCE_CHECK_MINUTES, and the warning when it runs low.

Below LOW_BALANCE_USD the bot says so once per UTC day in its log, and once per UTC day in each
moderation log channel of the servers this process serves (its shards' servers, so several
processes never post the same warning twice). Which servers were told today is kept in the
database, so a restart does not repeat it. The last reading is shown to managers by `/usage` and
exported as `imagine_wavespeed_balance_dollars`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import discord

from bot.i18n import DEFAULT, Money, t
from bot.metrics import Metrics
from bot.moderation.log import ModLog
from bot.moderation.settings import GuildSettingsStore
from bot.render import FAILED
from bot.storage.base import Storage
from bot.wavespeed.errors import WaveSpeedError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reading:
    dollars: float
    at: float  # unix time
    low: bool  # below LOW_BALANCE_USD


def utc_day(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")


def warning_embed(reading: Reading, *, threshold: float, price: float, locale: str = DEFAULT) -> discord.Embed:
    amount, limit = Money(f"{reading.dollars:.2f}"), Money(f"{threshold:.2f}")
    if price > 0:
        images = int(reading.dollars // price)
        text = t(
            locale, "balance.description_images", amount=amount, count=images, price=Money(str(price)), threshold=limit
        )
    else:
        text = t(locale, "balance.description", amount=amount, threshold=limit)
    embed = discord.Embed(title=t(locale, "balance.title"), description=text, colour=FAILED)
    embed.set_footer(text=t(locale, "balance.footer"))
    return embed


class BalanceWatch:
    def __init__(
        self,
        read: Callable[[], Awaitable[float]],
        *,
        threshold: float,
        interval: float,
        price: float,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._read, self.threshold, self.interval, self._price = read, threshold, interval, price
        self._metrics, self._clock = metrics, clock
        self.last: Reading | None = None
        self._logged_day = ""
        self._failing = False

    def record(self, dollars: float) -> Reading:
        """A balance read (at start-up, or by `check`): kept, exported, and warned about if low."""
        now = self._clock()
        reading = self.last = Reading(dollars, now, self.threshold > 0 and dollars < self.threshold)
        self._metrics.balance(dollars)
        if reading.low and self._logged_day != utc_day(now):
            self._logged_day = utc_day(now)
            log.warning(
                "WaveSpeed balance is $%.2f, below LOW_BALANCE_USD ($%.2f): top it up at wavespeed.ai, "
                "or image requests will fail when it runs out",
                dollars,
                self.threshold,
            )
        return reading

    async def check(self) -> Reading | None:
        try:
            dollars = await self._read()
        except WaveSpeedError as error:
            if not self._failing:  # one line when it starts failing, one when it works again
                log.warning("could not read the WaveSpeed balance (%s); trying again later", error)
            self._failing = True
            return None
        if self._failing:
            log.info("reading the WaveSpeed balance works again")
        self._failing = False
        return self.record(dollars)

    async def run(self, warn: Callable[[Reading], Awaitable[object]]) -> None:
        """Forever: read, warn the moderators if low, wait."""
        while True:
            reading = await self.check()
            if reading is not None and reading.low:
                try:
                    await warn(reading)
                except Exception:
                    log.exception("could not warn the moderators about the low balance")
            await asyncio.sleep(self.interval)

    async def warn_moderators(
        self,
        reading: Reading,
        guild_ids: Iterable[int],
        *,
        storage: Storage,
        settings: GuildSettingsStore,
        modlog: ModLog,
        locales: Mapping[int, str] | None = None,
    ) -> int:
        """Post the warning in each server's moderation log that was not told today, in the server's
        language (`locales`, by server id); returns how many."""
        day, told = utc_day(reading.at), 0
        for guild_id in guild_ids:
            if (await settings.get(guild_id)).log_channel_id is None:
                continue
            key = f"low-balance-warned:{guild_id}"
            if await storage.get_meta(key) == day:
                continue
            await storage.set_meta(key, day)  # first: a failed post is not retried all day (no spam)
            locale = (locales or {}).get(guild_id, DEFAULT)
            embed = warning_embed(reading, threshold=self.threshold, price=self._price, locale=locale)
            await modlog.post(guild_id, embed)
            told += 1
        if told:
            log.info("low-balance warning posted in %d moderation log channel(s)", told)
        return told
