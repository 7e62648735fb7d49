"""Everything a request passes before it becomes a job: shutdown, access, the server's moderation
rules, and the limits, then the job row. Shared by /imagine, /imagine-edit and the result buttons,
so every way in gets the same checks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import discord

from bot.jobs.runner import JobRunner
from bot.jobs.store import InvalidTransitionError, JobRecord, JobState, JobStore, NewJob
from bot.jobs.usage import usage_for
from bot.limits import Access, Limits, check
from bot.moderation.log import ModLog, refusal_entry
from bot.moderation.policy import gate_refusal, tolerance_refusal
from bot.moderation.settings import GuildSettingsStore
from bot.params import ImagineParams

log = logging.getLogger(__name__)

NOTHING_SENT = "Nothing was sent to the image service."


def age_restricted(interaction: discord.Interaction) -> bool:
    is_nsfw = getattr(interaction.channel, "is_nsfw", None)  # threads answer for their parent
    return bool(is_nsfw()) if callable(is_nsfw) else False


def role_ids(user: discord.User | discord.Member) -> list[int]:
    """The member's role ids as Discord sent them with the interaction (`Member.roles` would need
    the server's role cache, which a bot without the members intent may not have)."""
    return [int(r) for r in getattr(user, "_roles", ())]


class Admission:
    def __init__(
        self,
        runner: JobRunner,
        jobs: JobStore,
        *,
        limits: Limits,
        access: Access,
        guild_settings: GuildSettingsStore,
        modlog: ModLog,
    ) -> None:
        self._runner = runner
        self._jobs = jobs
        self._limits = limits
        self._access = access
        self.guild_settings = guild_settings
        self._modlog = modlog
        self._lock = asyncio.Lock()  # count-then-create, one request at a time

    async def admit(
        self,
        interaction: discord.Interaction,
        params: ImagineParams,
        *,
        kind: str = "imagine",
        source_job_id: int | None = None,
        bot_posts_placeholder: bool = False,
    ) -> JobRecord | str:
        """The new job, written down before anything is sent anywhere; or the refusal to show privately."""
        if not self._runner.accepting:
            return "⏳ The bot is restarting. Try again in a moment."
        refused = self._access.refusal(guild_id=interaction.guild_id, user_id=interaction.user.id)
        if refused is not None:
            return f"⛔ {refused.message}"
        by_server = await self._moderate(interaction, params)
        if by_server is not None:
            return f"⛔ {by_server} {NOTHING_SENT}"
        # Counting then creating must not interleave between requests, but with every limit off there
        # is nothing to count: no lock, so a burst of commands is written (and answered) in parallel.
        async with self._lock if self._limits.any else contextlib.nullcontext():
            now = time.time()
            limit = None
            if self._limits.any:
                usage = await usage_for(
                    self._jobs.db,
                    user_id=interaction.user.id,
                    guild_id=interaction.guild_id,
                    now=now,
                    window_seconds=self._limits.user_window_seconds,
                )
                in_guild = interaction.guild_id is not None
                limit = check(self._limits, usage, params.num_images, now=now, in_guild=in_guild)
            if limit is None:
                return await self._jobs.create(
                    NewJob(
                        interaction_id=interaction.id,
                        interaction_token="" if bot_posts_placeholder else interaction.token,
                        application_id=interaction.application_id,
                        guild_id=interaction.guild_id,
                        channel_id=interaction.channel_id,
                        user_id=interaction.user.id,
                        created_at=interaction.created_at.timestamp(),
                        params=params,
                        file_limit=interaction.filesize_limit,
                        channel_nsfw=age_restricted(interaction),
                        kind=kind,
                        source_job_id=source_job_id,
                    )
                )
        assert limit is not None
        log.info("user %s refused by %s", interaction.user.id, limit.limit)
        return f"⛔ {limit.message} {NOTHING_SENT}"

    async def placed(self, job: JobRecord, message_id: int | None) -> None:
        """The placeholder is up: record it and start the job."""
        try:
            job = await self._jobs.transition(
                job.id, JobState.QUEUED, detail="placeholder posted", message_id=message_id
            )
        except InvalidTransitionError:
            return  # cancelled with its button before this line ran: nothing to do
        self._runner.start(job)

    async def not_placed(self, job: JobRecord) -> None:
        await self._jobs.transition(job.id, JobState.FAILED, detail="could not answer", outcome="not answered")

    async def _moderate(self, interaction: discord.Interaction, params: ImagineParams) -> str | None:
        """The server's own rules: the refusal, or None."""
        settings = await self.guild_settings.get(interaction.guild_id)
        restricted = age_restricted(interaction)
        refused = gate_refusal(settings, channel_id=interaction.channel_id, role_ids=role_ids(interaction.user))
        refused = refused or tolerance_refusal(settings, params.safety_tolerance, age_restricted=restricted)
        if refused is not None:
            return refused
        term = (await self.guild_settings.matcher(interaction.guild_id)).first_match(params.prompt)
        if term is None:
            return None
        log.info("user %s refused by a blocked term in guild %s", interaction.user.id, interaction.guild_id)
        entry = refusal_entry(
            user_id=interaction.user.id,
            channel_id=interaction.channel_id,
            prompt=params.prompt,
            reason=f"Blocked term: `{term.text}`{' (regex)' if term.regex else ''}",
        )
        await self._modlog.post(interaction.guild_id, entry)
        return "Your prompt contains something this server doesn't allow. Rephrase it and try again."
