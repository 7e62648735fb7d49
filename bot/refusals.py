"""Why a request was refused, as data: the engine and the checks say which rule and the figures
behind it; the Discord side (`bot.render.refusal_text`) turns that into words for the member."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Refused(enum.StrEnum):
    RESTARTING = "restarting"  # the bot is shutting down
    BUSY = "busy"  # the database did not answer in time
    DMS_OFF = "ALLOW_DMS"
    GUILD_NOT_ALLOWED = "ALLOWED_GUILD_IDS"
    USER_NOT_ALLOWED = "ALLOWED_USER_IDS"
    CHANNEL_GATE = "allowed channels"
    ROLE_GATE = "allowed roles"
    TOLERANCE_CAP = "safety_tolerance cap"
    USER_ACTIVE = "USER_MAX_ACTIVE_IMAGES"
    USER_WINDOW = "USER_WINDOW_IMAGES"
    GUILD_DAILY = "GUILD_DAILY_IMAGES"
    GLOBAL_DAILY = "GLOBAL_DAILY_IMAGES"
    BLOCKED_TERM = "blocked term"
    TOO_COMPLEX = "too long once normalised"


# The kind of rule behind each refusal, for the metrics (`imagine_refusals_total{kind}`).
_CATEGORIES = {
    Refused.RESTARTING: "shutdown",
    Refused.BUSY: "busy",
    Refused.DMS_OFF: "access",
    Refused.GUILD_NOT_ALLOWED: "access",
    Refused.USER_NOT_ALLOWED: "access",
    Refused.CHANNEL_GATE: "gate",
    Refused.ROLE_GATE: "gate",
    Refused.TOLERANCE_CAP: "cap",
    Refused.USER_ACTIVE: "limit",
    Refused.USER_WINDOW: "limit",
    Refused.GUILD_DAILY: "limit",
    Refused.GLOBAL_DAILY: "limit",
    Refused.BLOCKED_TERM: "blocked_term",
    Refused.TOO_COMPLEX: "blocked_term",
}


def category(reason: Refused) -> str:
    """limit, gate, cap, blocked_term, access, busy or shutdown."""
    return _CATEGORIES[reason]


@dataclass(frozen=True)
class Refusal:
    """One refusal and the figures its message needs (which ones depends on `reason`)."""

    reason: Refused
    used: int = 0  # images already counted against the limit
    allowed: int = 0  # the limit
    asked: int = 0  # images this request asked for
    at: float | None = None  # unix time the member may go again, or a budget resets
    window_seconds: float = 0.0  # the rolling window of USER_WINDOW_IMAGES
    channels: tuple[int, ...] = ()  # where images may be made (CHANNEL_GATE)
    tolerance: str = ""  # what was asked (TOLERANCE_CAP)
    cap: str = ""  # the cap (TOLERANCE_CAP)
    age_restricted: bool = False  # the kind of channel the cap is for

    @property
    def nothing_sent(self) -> bool:
        """Every refusal happens before anything reaches WaveSpeed; the member is told so, except
        for the refusals that are about the bot rather than the request."""
        return self.reason not in (
            Refused.RESTARTING,
            Refused.DMS_OFF,
            Refused.GUILD_NOT_ALLOWED,
            Refused.USER_NOT_ALLOWED,
        )
