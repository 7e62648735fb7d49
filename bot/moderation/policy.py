"""Moderation decisions as pure functions: who may ask where, and how flagged images are posted."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from typing import Literal

from bot.jobs.outputs import PreparedOutputs
from bot.moderation.settings import GuildSettings
from bot.refusals import Refusal, Refused

NsfwMode = Literal["show", "spoiler", "withhold"]


def channel_age_restricted(channel: object) -> bool:
    """Whether a discord.py channel is age-restricted (a thread answers for its parent); anything
    that cannot say is not (the safe side: flagged images keep their spoiler)."""
    is_nsfw = getattr(channel, "is_nsfw", None)
    return bool(is_nsfw()) if callable(is_nsfw) else False


def nsfw_mode(settings: GuildSettings, *, age_restricted: bool) -> NsfwMode:
    """How flagged outputs are posted here. Plain display exists only for age-restricted channels,
    whatever a stored document says."""
    if age_restricted:
        return settings.nsfw_age_restricted
    return "withhold" if settings.nsfw_normal == "withhold" else "spoiler"


def apply_nsfw(outputs: PreparedOutputs, mode: NsfwMode, *, age_restricted: bool) -> PreparedOutputs:
    """The outputs as this channel may receive them. Unknown flags already count as flagged."""
    flags = outputs.flags
    if mode == "show" and not age_restricted:  # never unspoilered outside an age-restricted channel
        mode = "spoiler"
    if mode == "withhold":
        files = [f for f in outputs.files if not flags[f.index]]
        links = [link for link in outputs.links if not flags[link.index]]
        withheld = [i + 1 for i, flagged in enumerate(flags) if flagged]
        return dataclasses.replace(outputs, files=files, links=links, withheld=withheld)
    spoiler = mode == "spoiler"
    files = [dataclasses.replace(f, spoiler=spoiler and flags[f.index]) for f in outputs.files]
    links = [dataclasses.replace(link, spoiler=spoiler and flags[link.index]) for link in outputs.links]
    return dataclasses.replace(outputs, files=files, links=links, shown_plainly=not spoiler and any(flags))


def gate_refusal(settings: GuildSettings, *, channel_id: int | None, role_ids: Collection[int]) -> Refusal | None:
    """Allowed channels and roles (empty lists mean everywhere and everyone)."""
    if settings.allowed_channel_ids and channel_id not in settings.allowed_channel_ids:
        return Refusal(Refused.CHANNEL_GATE, channels=tuple(settings.allowed_channel_ids))
    if settings.allowed_role_ids and not set(role_ids) & set(settings.allowed_role_ids):
        return Refusal(Refused.ROLE_GATE)
    return None


def tolerance_refusal(settings: GuildSettings, tolerance: str, *, age_restricted: bool) -> Refusal | None:
    cap = settings.tolerance_cap(age_restricted=age_restricted)
    if int(tolerance) <= int(cap):
        return None
    return Refusal(Refused.TOLERANCE_CAP, tolerance=tolerance, cap=cap, age_restricted=age_restricted)
