"""Cost control: who may use the bot and how many images they may ask for. Pure functions.

Every limit counts images (`num_images`), not commands, because images are what the host pays
for. A job counts from the moment it is queued (so queueing cannot overshoot a budget) until it
fails or is cancelled before WaveSpeed made anything. 0 turns a limit off.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bot.refusals import Refusal, Refused


@dataclass(frozen=True)
class Limits:
    user_active_images: int = 8
    user_window_images: int = 20
    user_window_seconds: float = 3600.0
    guild_daily_images: int = 200
    global_daily_images: int = 1000

    @property
    def any(self) -> bool:
        """False when every limit is off: admission then needs no counting at all."""
        return any(
            (self.user_active_images, self.user_window_images, self.guild_daily_images, self.global_daily_images)
        )


@dataclass(frozen=True)
class Usage:
    """What has been asked for so far, from the job store."""

    user_active: int  # images queued or running for this member
    user_window: tuple[tuple[float, int], ...]  # (created_at, images) inside the window, oldest first
    guild_today: int  # 0 outside a server
    global_today: int

    @property
    def user_window_total(self) -> int:
        return sum(images for _, images in self.user_window)


@dataclass(frozen=True)
class Access:
    """Who may use the bot at all. Empty sets mean everyone."""

    guild_ids: frozenset[int] = frozenset()
    user_ids: frozenset[int] = frozenset()
    allow_dms: bool = False

    def refusal(self, *, guild_id: int | None, user_id: int) -> Refusal | None:
        if guild_id is None and not self.allow_dms:
            return Refusal(Refused.DMS_OFF)
        if guild_id is not None and self.guild_ids and guild_id not in self.guild_ids:
            return Refusal(Refused.GUILD_NOT_ALLOWED)
        if self.user_ids and user_id not in self.user_ids:
            return Refusal(Refused.USER_NOT_ALLOWED)
        return None


def next_utc_midnight(now: float) -> float:
    today = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return (today + timedelta(days=1)).timestamp()


def window_frees_at(limits: Limits, usage: Usage, images: int) -> float | None:
    """When enough of the member's window has aged out for `images` more; None if it never will."""
    if images > limits.user_window_images:
        return None
    over = usage.user_window_total + images - limits.user_window_images
    for created_at, count in usage.user_window:
        over -= count
        if over <= 0:
            return created_at + limits.user_window_seconds
    return None


def check(limits: Limits, usage: Usage, images: int, *, now: float, in_guild: bool) -> Refusal | None:
    """The first limit this request would break, with its figures, or None when it may go ahead."""
    if limits.user_active_images and usage.user_active + images > limits.user_active_images:
        return Refusal(Refused.USER_ACTIVE, used=usage.user_active, allowed=limits.user_active_images, asked=images)
    if limits.user_window_images and usage.user_window_total + images > limits.user_window_images:
        return Refusal(
            Refused.USER_WINDOW,
            used=usage.user_window_total,
            allowed=limits.user_window_images,
            asked=images,
            at=window_frees_at(limits, usage, images),
            window_seconds=limits.user_window_seconds,
        )
    midnight = next_utc_midnight(now)
    if in_guild and limits.guild_daily_images and usage.guild_today + images > limits.guild_daily_images:
        return Refusal(Refused.GUILD_DAILY, used=usage.guild_today, allowed=limits.guild_daily_images, at=midnight)
    if limits.global_daily_images and usage.global_today + images > limits.global_daily_images:
        return Refusal(Refused.GLOBAL_DAILY, allowed=limits.global_daily_images, at=midnight)
    return None
