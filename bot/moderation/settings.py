"""Per-server moderation settings: one JSON document per guild, every field with a safe default."""

from __future__ import annotations

import asyncio
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from bot.moderation.terms import BlockedTerm, TermMatcher
from bot.storage.base import SETTINGS, Storage

Tolerance = Literal["1", "2", "3", "4", "5"]


class GuildSettings(BaseModel):
    """What moderators decide for their server. Defaults are the cautious choice."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    # Flagged outputs in channels that are not age-restricted: behind a spoiler, or not posted at all.
    nsfw_normal: Literal["spoiler", "withhold"] = "spoiler"
    # Flagged outputs in age-restricted channels: behind a spoiler, or shown plainly.
    nsfw_age_restricted: Literal["spoiler", "show"] = "spoiler"
    max_tolerance_normal: Tolerance = "2"
    max_tolerance_age_restricted: Tolerance = "5"
    blocked_terms: tuple[BlockedTerm, ...] = ()
    allowed_role_ids: tuple[int, ...] = ()  # empty: every member
    allowed_channel_ids: tuple[int, ...] = ()  # empty: every channel
    log_channel_id: int | None = None
    # Who may press Re-roll and Edit on a result (Details is for everyone; Delete: requester or moderators).
    actions_by: Literal["anyone", "requester"] = "anyone"

    def tolerance_cap(self, *, age_restricted: bool) -> str:
        return self.max_tolerance_age_restricted if age_restricted else self.max_tolerance_normal


DEFAULTS = GuildSettings()


class GuildSettingsStore:
    """Reads and writes `guild_settings`; caches each server's settings and its compiled term list."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._cache: dict[int, GuildSettings] = {}
        self._matchers: dict[int, TermMatcher] = {}
        self._loading: dict[int, asyncio.Future[GuildSettings]] = {}
        storage.listen(self._on_notification)

    async def get(self, guild_id: int | None) -> GuildSettings:
        if guild_id is None:
            return DEFAULTS
        if guild_id in self._cache:
            return self._cache[guild_id]
        # A burst of commands from a server not seen yet reads its settings once, not once per command.
        loading = self._loading.get(guild_id)
        if loading is None:
            loading = self._loading[guild_id] = asyncio.ensure_future(self._load(guild_id))
            loading.add_done_callback(lambda _: self._loading.pop(guild_id, None))
        return await asyncio.shield(loading)

    async def _load(self, guild_id: int) -> GuildSettings:
        document = await self._storage.load_guild_settings(guild_id)
        try:
            settings = GuildSettings.model_validate_json(document) if document else DEFAULTS
        except ValidationError:
            settings = DEFAULTS  # an unreadable document must not lock moderators out
        return self._cache.setdefault(guild_id, settings)

    async def save(self, guild_id: int, settings: GuildSettings) -> GuildSettings:
        """Write a server's settings; every process drops its cached copy (a notification)."""
        await self._storage.save_guild_settings(guild_id, settings.model_dump_json())
        self._forget(guild_id)
        self._cache[guild_id] = settings
        return settings

    def _on_notification(self, channel: str, payload: str) -> None:
        if channel == SETTINGS and payload.isdigit():
            self._forget(int(payload))

    def _forget(self, guild_id: int) -> None:
        self._cache.pop(guild_id, None)
        self._matchers.pop(guild_id, None)

    async def update(self, guild_id: int, **changes: object) -> GuildSettings:
        current = await self.get(guild_id)
        return await self.save(guild_id, GuildSettings.model_validate({**current.model_dump(), **changes}))

    async def reset(self, guild_id: int) -> GuildSettings:
        return await self.save(guild_id, DEFAULTS)

    async def matcher(self, guild_id: int | None) -> TermMatcher:
        if guild_id is None:
            return TermMatcher(())
        if guild_id not in self._matchers:
            self._matchers[guild_id] = TermMatcher((await self.get(guild_id)).blocked_terms)
        return self._matchers[guild_id]
