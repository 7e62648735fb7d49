"""The placeholder message a job edits, and how its result reaches the channel.

While the interaction token lives (15 minutes) the placeholder is edited through it. After that,
or when Discord says the token is dead, the placeholder is edited with the bot token and the
result is posted as a new channel message that mentions only the requester. The dead token is
never retried: 401s count toward Discord's invalid-request ban.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import cast

import discord

from bot.i18n import t
from bot.jobs.model import JobRecord
from bot.jobs.outputs import OutputFile, PreparedOutputs
from bot.metrics import Route
from bot.render import discord_files

Describe = Callable[[OutputFile], str]

log = logging.getLogger(__name__)

NO_MENTIONS = discord.AllowedMentions.none()
# Unknown Webhook, Invalid Webhook Token: the interaction token is gone.
DEAD_TOKEN_CODES = frozenset({10015, 50027})
# Stop using the token a little before it expires, so an upload does not die half way.
TOKEN_MARGIN = timedelta(seconds=30)
TOKEN_LIFETIME = timedelta(minutes=15)
# Discord's alias for an interaction's first answer in webhook message routes (discord.py formats
# the id into the path, so the alias passes through although the parameter is typed int).
ORIGINAL = cast(int, "@original")


async def reply_privately(interaction: discord.Interaction, message: str) -> None:
    """An ephemeral answer: only the member who asked sees it."""
    if interaction.response.is_done():
        await interaction.followup.send(message, ephemeral=True, allowed_mentions=NO_MENTIONS)
    else:
        await interaction.response.send_message(message, ephemeral=True, allowed_mentions=NO_MENTIONS)


def placeholder_nonce(job_id: int) -> str:
    """The nonce of a placeholder the bot posts itself: posting it again after a crash returns the
    first one instead of a duplicate (Discord keeps nonces for a few minutes)."""
    return f"imagine-ph-{job_id}"


def token_is_dead(error: discord.HTTPException) -> bool:
    return error.code in DEAD_TOKEN_CODES


class Placeholder:
    """The job's placeholder message, rebuilt from its stored record: works the same after a restart."""

    def __init__(self, client: discord.Client, job: JobRecord) -> None:
        self._client = client
        self.job_id = job.id
        self.message_id = job.message_id
        self.channel_id = job.channel_id
        self.requester_id = job.user_id
        self.locale = job.locale
        self._expires_at = datetime.fromtimestamp(job.created_at, UTC) + TOKEN_LIFETIME
        self._webhook = (
            discord.Webhook.partial(job.application_id, job.interaction_token, client=client)
            if job.interaction_token
            else None
        )
        self._token_dead = False
        self.route: Route = "placeholder"  # how the last `deliver` went
        # No interaction token at all: the bot posted the placeholder with its own token.
        self.bot_posted = not job.interaction_token and not job.finished

    @property
    def token_alive(self) -> bool:
        if self._token_dead or self._webhook is None or self.message_id is None:
            return False
        return discord.utils.utcnow() < self._expires_at - TOKEN_MARGIN

    @property
    def nonce(self) -> str:
        """The same for every attempt at one job's channel delivery: Discord drops a repeat."""
        return f"imagine-job-{self.job_id}"

    async def find_original(self) -> int | None:
        """The message id of the interaction's answer, if it was sent (asked through the token)."""
        if self._webhook is None or discord.utils.utcnow() >= self._expires_at:
            return None
        try:
            message = await self._webhook.fetch_message(ORIGINAL)
        except discord.HTTPException:
            return None
        return message.id

    def _by_bot_token(self) -> discord.PartialMessage | None:
        if self.channel_id is None or self.message_id is None:
            return None
        return self._client.get_partial_messageable(self.channel_id).get_partial_message(self.message_id)

    async def _edit_by_token(
        self, embed: discord.Embed, view: discord.ui.View | None, files: list[discord.File] | None = None
    ) -> bool:
        """Edit through the interaction token; False when it is (or just turned out) dead."""
        if not self.token_alive:
            return False
        assert self._webhook is not None and self.message_id is not None
        try:
            if files is None:
                await self._webhook.edit_message(self.message_id, embed=embed, view=view, allowed_mentions=NO_MENTIONS)
            else:
                await self._webhook.edit_message(
                    self.message_id, embed=embed, attachments=files, view=view, allowed_mentions=NO_MENTIONS
                )
        except discord.HTTPException as error:
            if not token_is_dead(error):
                raise
            self._token_dead = True
            return False
        return True

    async def edit(self, embed: discord.Embed, *, view: discord.ui.View | None = None) -> None:
        """Show a progress or failure embed on the placeholder, with `view`'s buttons or none."""
        if await self._edit_by_token(embed, view):
            return
        message = self._by_bot_token()
        if message is not None:
            await message.edit(embed=embed, view=view, allowed_mentions=NO_MENTIONS)

    async def deliver(
        self,
        embed: discord.Embed,
        outputs: PreparedOutputs,
        *,
        view: discord.ui.View | None = None,
        private: Callable[[], tuple[discord.Embed, PreparedOutputs]] | None = None,
        describe: tuple[Describe, Describe] | None = None,
    ) -> discord.Message | None:
        """Post the result. The placeholder becomes the result (returns None) or, when the token is
        dead, a new channel message carries it (returned, so the caller can point to it). Both are
        safe to repeat after a crash: the edit replaces the message, the new message has a nonce.
        `private` renders the result as a DM may show it (a DM is never age-restricted), called
        only when the bot may not post in the channel. `describe` gives each image its alt text,
        in the channel's language and in the requester's (for the DM)."""
        in_channel, in_dm = describe or (None, None)
        if await self._edit_by_token(embed, view, discord_files(outputs.files, in_channel)):
            return None
        if self.bot_posted and self.message_id is not None and self.channel_id is not None:
            # A placeholder the bot posted itself (a reply to a result): it becomes the result.
            message = self._by_bot_token()
            assert message is not None
            await message.edit(
                embed=embed,
                attachments=discord_files(outputs.files, in_channel),
                view=view,
                allowed_mentions=NO_MENTIONS,
            )
            return None
        if self.channel_id is None:
            raise RuntimeError("the interaction token expired and the channel is unknown")
        self.route = "channel"
        log.info("interaction token expired; delivering as a new message in channel %s", self.channel_id)
        channel = self._client.get_partial_messageable(self.channel_id)
        reference = (
            discord.MessageReference(message_id=self.message_id, channel_id=self.channel_id, fail_if_not_exists=False)
            if self.message_id
            else None
        )
        mention_requester = discord.AllowedMentions(
            everyone=False, roles=False, replied_user=False, users=[discord.Object(self.requester_id)]
        )
        try:
            return await channel.send(
                content=f"<@{self.requester_id}>",
                embed=embed,
                files=discord_files(outputs.files, in_channel),
                allowed_mentions=mention_requester,
                reference=reference,  # type: ignore[arg-type]
                nonce=self.nonce,
                view=view or discord.utils.MISSING,
            )
        except discord.Forbidden:
            log.warning("missing permissions in channel %s; sending the result by DM", self.channel_id)
        # Losing the images is worse than a DM: the requester gets them with the reason, under the
        # server's policy for a place that is not age-restricted.
        dm_embed, dm_outputs = private() if private else (embed, outputs)
        self.route = "dm"
        dm = await self._client.create_dm(discord.Object(self.requester_id))
        return await dm.send(
            content=t(self.locale, "delivery.dm", channel=f"<#{self.channel_id}>"),
            embed=dm_embed,
            files=discord_files(dm_outputs.files, in_dm),
            allowed_mentions=NO_MENTIONS,
            nonce=self.nonce,
        )
