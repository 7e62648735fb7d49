"""Everything a request passes before it becomes a job: shutdown, access, the server's moderation
rules, and the limits, then the job row. Shared by /imagine, /imagine-edit and the result buttons,
so every way in gets the same checks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import discord

from bot.i18n import resolve
from bot.jobs.dispatcher import Dispatcher
from bot.jobs.foreground import Foreground
from bot.jobs.model import InvalidTransitionError, JobRecord, NewJob
from bot.jobs.runner import JobRunner
from bot.limits import Access, Limits, check
from bot.metrics import NOOP, Metrics
from bot.moderation.log import ModLog, refusal_entry
from bot.moderation.policy import channel_age_restricted, gate_refusal, tolerance_refusal
from bot.moderation.settings import GuildSettingsStore
from bot.moderation.terms import PromptTooComplexError
from bot.params import ImagineParams
from bot.refusals import Refusal, Refused
from bot.storage.base import Storage
from bot.tasks import finish_anyway

log = logging.getLogger(__name__)

# How long admission may wait on the database: with the network, the answer must reach Discord
# within its 3-second window.
DB_BUDGET = 2.0


def role_ids(user: discord.User | discord.Member) -> list[int]:
    """The member's role ids as Discord sent them with the interaction (`Member.roles` would need
    the server's role cache, which a bot without the members intent may not have)."""
    return [int(r) for r in getattr(user, "_roles", ())]


class Admission:
    def __init__(
        self,
        runner: JobRunner,
        dispatcher: Dispatcher,
        storage: Storage,
        *,
        limits: Limits,
        access: Access,
        guild_settings: GuildSettingsStore,
        modlog: ModLog,
        db_budget: float = DB_BUDGET,
        foreground: Foreground | None = None,
        metrics: Metrics = NOOP,
    ) -> None:
        self._runner = runner
        self._dispatcher = dispatcher
        self._storage = storage
        self._limits = limits
        self._access = access
        self.guild_settings = guild_settings
        self._modlog = modlog
        self._lock = asyncio.Lock()  # count-then-create, one request at a time
        self._db_budget = db_budget
        # Around admitting a command and answering it (the callers' part): deferred work waits meanwhile.
        self.foreground = foreground or Foreground()
        self._metrics = metrics

    async def admit(
        self,
        interaction: discord.Interaction,
        params: ImagineParams,
        *,
        kind: str = "imagine",
        source_job_id: int | None = None,
        bot_posts_placeholder: bool = False,
    ) -> JobRecord | Refusal:
        """The new job, written down before anything is sent anywhere; or why not (the caller shows it
        privately).

        The checks run cheapest first: shutdown, access, the server's gates and tolerance cap, the
        limits, and only then the blocked terms (the costliest: Unicode normalisation of the whole
        prompt), so a member over a limit cannot keep the bot busy with moderation work. The
        database part is time-boxed: a database locked by another process must not make Discord
        show "the application did not respond"."""
        answer: JobRecord | Refusal | None
        if not self._runner.accepting:
            answer = Refusal(Refused.RESTARTING)
        else:
            answer = self._access.refusal(guild_id=interaction.guild_id, user_id=interaction.user.id)
        if answer is None:
            try:
                async with asyncio.timeout(self._db_budget):
                    answer = await self._admit(interaction, params, kind, source_job_id, bot_posts_placeholder)
            except TimeoutError:
                log.warning("admission of interaction %s timed out: the database is busy", interaction.id)
                answer = Refusal(Refused.BUSY)
        if isinstance(answer, Refusal):
            self._metrics.refused(answer.reason)
        return answer

    async def _admit(
        self,
        interaction: discord.Interaction,
        params: ImagineParams,
        kind: str,
        source_job_id: int | None,
        bot_posts_placeholder: bool,
    ) -> JobRecord | Refusal:
        settings = await self.guild_settings.get(interaction.guild_id)
        restricted = channel_age_restricted(interaction.channel)
        by_server = gate_refusal(settings, channel_id=interaction.channel_id, role_ids=role_ids(interaction.user))
        by_server = by_server or tolerance_refusal(settings, params.safety_tolerance, age_restricted=restricted)
        if by_server is not None:
            return by_server
        # Counting then creating must not interleave between requests, but with every limit off there
        # is nothing to count: no lock, so a burst of commands is written (and answered) in parallel.
        async with self._lock if self._limits.any else contextlib.nullcontext():
            if self._limits.any:
                now = time.time()
                usage = await self._storage.usage_for(
                    user_id=interaction.user.id,
                    guild_id=interaction.guild_id,
                    now=now,
                    window_seconds=self._limits.user_window_seconds,
                )
                in_guild = interaction.guild_id is not None
                limit = check(self._limits, usage, params.num_images, now=now, in_guild=in_guild)
                if limit is not None:
                    log.info("user %s refused by %s", interaction.user.id, limit.reason.value)
                    return limit
            blocked = await self._blocked(interaction, params)
            if blocked is not None:
                return blocked
            new_job = NewJob(
                interaction_id=interaction.id,
                interaction_token="" if bot_posts_placeholder else interaction.token,
                application_id=interaction.application_id,
                guild_id=interaction.guild_id,
                channel_id=interaction.channel_id,
                user_id=interaction.user.id,
                created_at=interaction.created_at.timestamp(),
                params=params,
                file_limit=interaction.filesize_limit,
                channel_nsfw=restricted,
                kind=kind,
                source_job_id=source_job_id,
                locale=resolve(interaction.locale),
                guild_locale=resolve(interaction.guild_locale) if interaction.guild_id is not None else None,
            )
            # If the time box runs out while the row is being written, the write may still land: it
            # carries on, and the job is then closed as never answered, so it neither runs nor counts.
            return await finish_anyway(self._storage.create_job(new_job), if_abandoned=self.not_placed)

    async def placed(self, job: JobRecord, message_id: int | None) -> None:
        """The placeholder is up: record it, and the job joins the line any process may claim from."""
        try:
            job = await self._storage.record_placeholder(job.id, message_id)
        except InvalidTransitionError:
            return  # cancelled with its button before this line ran: nothing to do
        await self._dispatcher.placed(job)

    async def not_placed(self, job: JobRecord) -> None:
        await self._storage.fail(job.id, outcome="not answered", detail="could not answer", finished_at=time.time())

    async def _blocked(self, interaction: discord.Interaction, params: ImagineParams) -> Refusal | None:
        """The server's blocked terms: the refusal, or None. A hit is logged for moderators."""
        matcher = await self.guild_settings.matcher(interaction.guild_id)
        try:
            term = matcher.first_match(params.prompt)
        except PromptTooComplexError:
            return Refusal(Refused.TOO_COMPLEX)
        if term is None:
            return None
        log.info("user %s refused by a blocked term in guild %s", interaction.user.id, interaction.guild_id)
        entry = refusal_entry(
            user_id=interaction.user.id,
            channel_id=interaction.channel_id,
            prompt=params.prompt,
            term=term.text,
            regex=term.regex,
            locale=resolve(interaction.guild_locale),
        )
        await self._modlog.post(interaction.guild_id, entry)
        return Refusal(Refused.BLOCKED_TERM)
