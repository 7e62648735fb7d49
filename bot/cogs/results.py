"""Buttons on a delivered result: Re-roll, Edit, Details, Delete. Persistent: each custom id carries
the action and the job id, the class is registered at start-up, and the state is read from the
store, so the buttons work for the life of the message, across restarts.

Re-roll and Edit start new jobs through the same admission as /imagine (limits, moderation, queue)
and post their placeholder as a reply to the result. Who may press them is a server setting.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import re

import discord

from bot import render
from bot.cogs.cancel import cancel_view
from bot.delivery import NO_MENTIONS, placeholder_nonce, reply_privately
from bot.i18n import DEFAULT, resolve, t
from bot.jobs.model import JobRecord
from bot.jobs.progress import Stage
from bot.links import message_url
from bot.moderation.log import deletion_entry
from bot.params import PROMPT_MAX_LENGTH, SEED_MAX, ImagineParams
from bot.refusals import Refusal
from bot.services import Services, services

log = logging.getLogger(__name__)

ACTIONS = {"reroll": "🎲", "edit": "✏️", "details": "ℹ️", "delete": "🗑️"}


class ResultButton(
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]],
    template=r"imagine:(?P<action>reroll|edit|details|delete):(?P<job>[0-9]+)",
):
    def __init__(self, action: str, job_id: int, locale: str = DEFAULT) -> None:
        label, emoji = t(locale, f"button.{action}"), ACTIONS[action]
        style = discord.ButtonStyle.primary if action == "reroll" else discord.ButtonStyle.secondary
        custom_id = f"imagine:{action}:{job_id}"
        super().__init__(discord.ui.Button(label=label, emoji=emoji, style=style, custom_id=custom_id))
        self.action, self.job_id = action, job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[discord.ui.View], match: re.Match[str]
    ) -> ResultButton:
        return cls(match["action"], int(match["job"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        bot = services(interaction)
        locale = resolve(interaction.locale)
        try:
            job: JobRecord | None = await bot.storage.get_job(self.job_id)
        except KeyError:
            job = None  # pruned by retention
        if self.action == "delete":
            await delete(bot, interaction, job)
            return
        if job is None:
            await reply_privately(interaction, t(locale, "result.gone"))
            return
        if self.action == "details":
            await reply_privately(interaction, render.details_text(job, locale))
            return
        settings = await bot.guild_settings.get(interaction.guild_id)
        if settings.actions_by == "requester" and interaction.user.id != job.user_id:
            await reply_privately(interaction, t(locale, "result.only_requester"))
            return
        if self.action == "reroll":
            params = dataclasses.replace(
                job.params, seed=random.SystemRandom().randint(0, SEED_MAX), seed_was_random=True
            )
            await start_reply(bot, interaction, params, kind="reroll", source=job)
            return
        images = [a for a in (interaction.message.attachments if interaction.message else []) if is_image(a)]
        if not images:
            await reply_privately(interaction, t(locale, "result.no_image"))
            return
        await interaction.response.send_modal(EditModal(job, len(images), press_id=interaction.id, locale=locale))


def is_image(attachment: discord.Attachment) -> bool:
    return (attachment.content_type or "").startswith("image/")


class EditModal(discord.ui.Modal):
    """Asks what to change (and which image). The submit is handled in `on_submit`; the images are
    read again from the message then, so their signed URLs are fresh."""

    def __init__(self, job: JobRecord, image_count: int, *, press_id: int, locale: str = DEFAULT) -> None:
        # discord.py keeps open modals by custom_id: one per press, so two members editing the same
        # result each get their own dialog (a shared id handed one member's answer to the other's).
        super().__init__(
            title=t(locale, "modal.title"), timeout=None, custom_id=f"imagine:edit-modal:{job.id}:{press_id}"
        )
        self.job = job
        self.locale = locale
        self.instruction: discord.ui.TextInput[EditModal] = discord.ui.TextInput(
            label=t(locale, "modal.instruction"),
            style=discord.TextStyle.paragraph,
            placeholder=t(locale, "modal.placeholder"),
            max_length=PROMPT_MAX_LENGTH,
        )
        self.add_item(self.instruction)
        self.which: discord.ui.TextInput[EditModal] | None = None
        if image_count > 1:
            self.which = discord.ui.TextInput(
                label=t(locale, "modal.which", count=image_count), default="1", min_length=1, max_length=1
            )
            self.add_item(self.which)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        bot = services(interaction)
        images = [a for a in (interaction.message.attachments if interaction.message else []) if is_image(a)]
        number = self.which.value.strip() if self.which is not None else "1"
        if not number.isdigit() or not 1 <= int(number) <= len(images):
            await reply_privately(interaction, "⚠️ " + t(self.locale, "modal.pick", count=len(images)))
            return
        instruction = self.instruction.value.strip()
        if not instruction:  # as /imagine refuses an empty prompt
            empty = t(self.locale, "modal.empty") + " " + t(self.locale, "nothing_sent")
            await reply_privately(interaction, "⚠️ " + empty)
            return
        source = images[int(number) - 1]
        params = dataclasses.replace(
            self.job.params,
            prompt=instruction,
            num_images=1,
            seed=random.SystemRandom().randint(0, SEED_MAX),
            seed_was_random=True,
            image_url=source.url,
        )
        await start_reply(bot, interaction, params, kind="edit", source=self.job)


async def start_reply(
    bot: Services, interaction: discord.Interaction, params: ImagineParams, *, kind: str, source: JobRecord
) -> None:
    """A job started from a result: its placeholder is a reply to that result, posted by the bot."""
    with bot.admission.foreground.answer():  # deferred work waits until the press is acknowledged
        job = await bot.admission.admit(
            interaction, params, kind=kind, source_job_id=source.id, bot_posts_placeholder=True
        )
        if isinstance(job, Refusal):
            await reply_privately(interaction, render.refusal_text(job, resolve(interaction.locale)))
            return
        await interaction.response.defer()  # acknowledged; the reply below is what the channel sees
    channel = interaction.channel
    reference = interaction.message.to_reference(fail_if_not_exists=False) if interaction.message else None
    if not isinstance(channel, discord.abc.Messageable):
        await bot.admission.not_placed(job)
        return
    try:
        placeholder = await post_reply_placeholder(channel, job, reference)
    except discord.HTTPException as error:
        log.warning("could not post the placeholder for job %s: %s", job.id, error)
        await bot.admission.not_placed(job)
        explained = render.explain(error, resolve(interaction.locale))
        await interaction.followup.send(explained, ephemeral=True, allowed_mentions=NO_MENTIONS)
        return
    await bot.admission.placed(job, placeholder.id)


async def post_reply_placeholder(
    channel: discord.abc.Messageable, job: JobRecord, reference: discord.MessageReference | None
) -> discord.Message:
    """The reply a Re-roll or Edit job shows its progress in. Its nonce makes a repeat after a crash
    return the same message."""
    return await channel.send(
        embed=render.placeholder_embed(job.params, Stage.QUEUED, locale=job.locale),
        view=cancel_view(job.id, job.locale),
        reference=reference,  # type: ignore[arg-type]
        allowed_mentions=NO_MENTIONS,
        nonce=placeholder_nonce(job.id),
    )


async def delete(bot: Services, interaction: discord.Interaction, job: JobRecord | None) -> None:
    locale = resolve(interaction.locale)
    is_requester = job is not None and interaction.user.id == job.user_id
    if not is_requester and not interaction.permissions.manage_messages:
        await reply_privately(interaction, t(locale, "delete.not_allowed"))
        return
    message = interaction.message
    if message is None:
        await reply_privately(interaction, t(locale, "delete.not_found"))
        return
    try:
        await message.delete()
    except discord.HTTPException as error:
        log.warning("could not delete result message %s: %s", message.id, error)
        await reply_privately(interaction, t(locale, "delete.failed"))
        return
    log.info("result message %s deleted by user %s", message.id, interaction.user.id)
    await reply_privately(interaction, "🗑️ " + t(locale, "delete.done"))
    if job is not None:
        url = message_url(interaction.guild_id, message.channel.id, message.id)
        await bot.modlog.post(job.guild_id, deletion_entry(job, by=interaction.user.id, url=url))


def result_view(job_id: int, locale: str = DEFAULT) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for action in ACTIONS:
        view.add_item(ResultButton(action, job_id, locale))
    return view
