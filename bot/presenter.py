"""The Discord presenter: the one place that turns the job engine's facts into embeds, files and
words, under each server's policy. The engine (`bot.jobs`) never imports discord."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

import discord

from bot import render
from bot.cogs.cancel import cancel_view
from bot.cogs.results import post_reply_placeholder, result_view
from bot.delivery import Placeholder
from bot.jobs.events import Delivered
from bot.jobs.model import JobRecord
from bot.jobs.outputs import PreparedOutputs
from bot.jobs.progress import Stage, Status
from bot.links import jump_url, message_url
from bot.metrics import Route
from bot.moderation.log import ModLog, generation_entry
from bot.moderation.policy import apply_nsfw, channel_age_restricted, nsfw_mode
from bot.moderation.settings import GuildSettingsStore
from bot.storage.base import Storage
from bot.tasks import create_task
from bot.wavespeed.models import Prediction

log = logging.getLogger(__name__)

# How long a last "paused" or "failed" edit may take before the bot gives up on it.
LAST_EDIT_TIMEOUT = 5.0


@dataclasses.dataclass(frozen=True)
class Reviewed:
    """The outputs as the job's channel may receive them, and as a private message (a DM, never
    age-restricted) may: a delivery that falls back to a DM must not carry the channel's policy."""

    channel: PreparedOutputs
    private: PreparedOutputs


class DiscordPresenter:
    def __init__(
        self, client: discord.Client, storage: Storage, guild_settings: GuildSettingsStore, modlog: ModLog
    ) -> None:
        self._client = client
        self._storage = storage
        self._guild_settings = guild_settings
        self._modlog = modlog
        # One placeholder per job while it runs: it remembers a token Discord declared dead, so
        # the bot never uses it again (401s count toward Discord's invalid-request ban).
        self._placeholders: dict[int, Placeholder] = {}
        self._lookups: dict[int, asyncio.Task[bool]] = {}  # channel id -> Discord being asked about it

    def _placeholder(self, job: JobRecord) -> Placeholder:
        placeholder = self._placeholders.get(job.id)
        if placeholder is None or placeholder.message_id != job.message_id:
            placeholder = self._placeholders[job.id] = Placeholder(self._client, job)
        return placeholder

    def _done(self, job: JobRecord) -> Placeholder:
        """The job's placeholder for its last edits; forgotten here."""
        placeholder = self._placeholder(job)
        self._placeholders.pop(job.id, None)
        return placeholder

    async def show(self, job: JobRecord, status: Status, *, since: datetime | None) -> None:
        view = cancel_view(job.id, job.locale) if status.stage is Stage.QUEUED else None
        embed = render.placeholder_embed(job.params, status, since=since, locale=job.locale)
        await self._placeholder(job).edit(embed, view=view)

    async def failed(self, job: JobRecord, error: BaseException) -> None:
        embed = render.failure_embed(job.params, error, prediction_id=job.prediction_id, locale=job.locale)
        await _last_edit(self._done(job).edit(embed))

    async def paused(self, job: JobRecord) -> None:
        view = cancel_view(job.id, job.locale) if job.state.value == "queued" else None
        paused = render.paused_embed(job.params, prediction_id=job.prediction_id, locale=job.locale)
        await _last_edit(self._done(job).edit(paused, view=view))

    async def deliver(self, job: JobRecord, prediction: Prediction, outputs: PreparedOutputs) -> Delivered:
        target = self._done(job)
        shown = await self._review(job, outputs)
        # The channel sees the result in the server's language; a DM is the requester's own.
        locale = job.public_locale
        view = result_view(job.id, locale)

        def rendered(reviewed: PreparedOutputs, locale: str = locale) -> tuple[discord.Embed, PreparedOutputs]:
            return render.result_embed(job.params, prediction, reviewed, locale=locale), reviewed

        def private(reviewed: PreparedOutputs) -> Callable[[], tuple[discord.Embed, PreparedOutputs]]:
            return lambda: rendered(reviewed, job.locale)  # rendered only if the channel refuses it

        alt = (render.describer(job.params.prompt, locale), render.describer(job.params.prompt, job.locale))
        route: Route | None = None
        try:
            sent = await target.deliver(
                *rendered(shown.channel), view=view, private=private(shown.private), describe=alt
            )
        except discord.HTTPException as error:
            if error.status != 413 and error.code != 40005:
                raise
            # Discord refused the upload after all: deliver links instead of failing.
            log.warning("Discord refused the upload (%s); delivering links", error.code)
            links = Reviewed(*(o.without_files(prediction.output_urls) for o in (shown.channel, shown.private)))
            sent = await target.deliver(
                *rendered(links.channel), view=view, private=private(links.private), describe=alt
            )
            route = "links"
        route = route or target.route
        if sent is None:
            return Delivered(None, route=route)
        # The images are out: a placeholder that cannot point to them must not fail the job.
        url = jump_url(sent, job.guild_id)
        await _last_edit(target.edit(render.delivered_elsewhere_embed(job.params, url, locale=job.locale)))
        return Delivered(sent.id, url, route)

    async def delivered(
        self, job: JobRecord, prediction: Prediction, outputs: PreparedOutputs, where: Delivered
    ) -> None:
        """The moderation log's entry, with every image (flagged ones behind a spoiler)."""
        url = where.link or message_url(job.guild_id, job.channel_id, job.message_id)
        locale = job.public_locale
        entry = generation_entry(job, prediction, outputs, url, locale=locale)
        await self._modlog.post(job.guild_id, entry, outputs, describe=render.describer(job.params.prompt, locale))

    async def find_placeholder(self, job: JobRecord) -> int | None:
        """After a crash around posting a job's placeholder: the message, if it was posted."""
        if job.interaction_token:
            return await self._placeholder(job).find_original()
        if job.channel_id is None or job.source_job_id is None:
            return None
        # A reply placeholder: posting it again with its nonce returns the first one if it exists.
        try:
            source = await self._storage.get_job(job.source_job_id)
        except KeyError:
            source = None
        reference = None
        if source is not None and (source.result_message_id or source.message_id):
            reference = discord.MessageReference(
                message_id=source.result_message_id or source.message_id or 0,
                channel_id=job.channel_id,
                fail_if_not_exists=False,
            )
        try:
            message = await post_reply_placeholder(self._client.get_partial_messageable(job.channel_id), job, reference)
        except discord.HTTPException:
            return None
        return message.id

    # -- the server's NSFW policy where the images land --------------------------------------------------
    async def _review(self, job: JobRecord, outputs: PreparedOutputs) -> Reviewed:
        """The server's NSFW policy for the channel as it is now (it may have lost its age
        restriction while the job waited), and for a DM, which never is age-restricted."""
        settings = await self._guild_settings.get(job.guild_id)
        restricted = await self._age_restricted(job.channel_id)
        private = apply_nsfw(outputs, nsfw_mode(settings, age_restricted=False), age_restricted=False)
        if not restricted:
            return Reviewed(private, private)
        channel = apply_nsfw(outputs, nsfw_mode(settings, age_restricted=True), age_restricted=True)
        return Reviewed(channel, private)

    async def _age_restricted(self, channel_id: int | None) -> bool:
        """Whether the channel is age-restricted now: the gateway's cache, else Discord's answer.
        When it cannot be known, it is not (the safe side: flagged images keep their spoiler)."""
        if channel_id is None:
            return False
        channel = self._client.get_channel(channel_id)
        if channel is not None:
            return channel_age_restricted(channel)
        # Not in the gateway's cache (a thread, a server this shard has not loaded): every delivery
        # asking about the channel while Discord is being asked shares that answer. Asking once
        # each would queue them all behind one another (discord.py runs a route's requests one at
        # a time until Discord states its limit), and no answer is older than the question.
        lookup = self._lookups.get(channel_id)
        if lookup is None:
            lookup = self._lookups[channel_id] = create_task(self._look_up(channel_id), name="channel lookup")
            lookup.add_done_callback(lambda _: self._lookups.pop(channel_id, None))
        return await asyncio.shield(lookup)

    async def _look_up(self, channel_id: int) -> bool:
        try:
            channel = await self._client.fetch_channel(channel_id)
        except (discord.HTTPException, discord.InvalidData) as error:
            log.warning("could not look up channel %s (%s); treating it as not age-restricted", channel_id, error)
            return False
        return channel_age_restricted(channel)


async def _last_edit(edit: Awaitable[None]) -> None:
    """A final edit that must not raise or hang: the job is over either way."""
    try:
        async with asyncio.timeout(LAST_EDIT_TIMEOUT):
            await edit
    except (discord.HTTPException, TimeoutError, RuntimeError) as error:
        log.warning("could not update the placeholder: %s", error)
