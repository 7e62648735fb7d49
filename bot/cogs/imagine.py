"""The `/imagine` slash command: validate, answer at once with a placeholder, hand the job on."""

from __future__ import annotations

import asyncio
import logging
import random
import time

import discord
from discord import app_commands
from discord.ext import commands

from bot import render
from bot.cogs.cancel import cancel_view
from bot.delivery import NO_MENTIONS, reply_privately
from bot.jobs.progress import Stage
from bot.jobs.runner import JobRunner
from bot.jobs.store import InvalidTransitionError, JobState, JobStore, NewJob
from bot.jobs.usage import usage_for
from bot.limits import Access, Limits, check
from bot.moderation.log import ModLog, refusal_entry
from bot.moderation.policy import gate_refusal, tolerance_refusal
from bot.moderation.settings import GuildSettingsStore
from bot.params import (
    ASPECT_RATIOS,
    DEFAULT_GUIDANCE,
    GUIDANCE_MAX,
    GUIDANCE_MIN,
    NUM_IMAGES_MAX,
    PROMPT_MAX_LENGTH,
    SAFETY_TOLERANCES,
    SEED_MAX,
    ImagineParams,
    InvalidOptionError,
    validate,
)

log = logging.getLogger(__name__)

_RATIO_NAMES = {
    "21:9": "21:9 ultrawide",
    "16:9": "16:9 widescreen",
    "4:3": "4:3 landscape",
    "3:2": "3:2 photo",
    "1:1": "1:1 square",
    "2:3": "2:3 portrait",
    "3:4": "3:4 portrait",
    "9:16": "9:16 phone",
    "9:21": "9:21 tall",
}
_TOLERANCE_NAMES = {"1": "1 (strictest)", "2": "2 (default)", "3": "3", "4": "4", "5": "5 (most permissive)"}


class ImagineCog(commands.Cog):
    def __init__(
        self,
        runner: JobRunner,
        jobs: JobStore,
        *,
        limits: Limits,
        access: Access,
        guild_settings: GuildSettingsStore,
        modlog: ModLog,
        rng: random.Random | None = None,
    ) -> None:
        self._runner = runner
        self._jobs = jobs
        self._guild_settings = guild_settings
        self._modlog = modlog
        self._limits = limits
        self._access = access
        self._rng = rng or random.SystemRandom()
        self._admission = asyncio.Lock()  # count-then-create, one request at a time

    async def _moderate(self, interaction: discord.Interaction, params: ImagineParams) -> str | None:
        """The server's own rules, checked before anything is written or sent: the refusal, or None."""
        settings = await self._guild_settings.get(interaction.guild_id)
        restricted = age_restricted(interaction)
        refused = gate_refusal(settings, channel_id=interaction.channel_id, role_ids=role_ids(interaction.user))
        refused = refused or tolerance_refusal(settings, params.safety_tolerance, age_restricted=restricted)
        if refused is not None:
            return refused
        term = (await self._guild_settings.matcher(interaction.guild_id)).first_match(params.prompt)
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

    @app_commands.command(name="imagine", description="Generate images from a prompt with FLUX.1 Kontext [pro]")
    @app_commands.describe(
        prompt="What to draw: subject, style, lighting, composition",
        aspect_ratio="Shape of the image (default 1:1 square)",
        num_images=f"How many images to make, 1 to {NUM_IMAGES_MAX} (default 1)",
        seed="Same seed + same prompt = same image. Leave empty or -1 for a random seed",
        guidance_scale=f"How closely to follow the prompt, {GUIDANCE_MIN:g} to {GUIDANCE_MAX:g} "
        f"(default {DEFAULT_GUIDANCE:g})",
        safety_tolerance="1 is the strictest filter, 5 the most permissive (default 2)",
    )
    @app_commands.choices(
        aspect_ratio=[app_commands.Choice(name=_RATIO_NAMES[r], value=r) for r in ASPECT_RATIOS],
        safety_tolerance=[app_commands.Choice(name=_TOLERANCE_NAMES[t], value=t) for t in SAFETY_TOLERANCES],
    )
    async def imagine(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, PROMPT_MAX_LENGTH],
        aspect_ratio: str | None = None,
        num_images: app_commands.Range[int, 1, NUM_IMAGES_MAX] | None = None,
        seed: app_commands.Range[int, -1, SEED_MAX] | None = None,
        guidance_scale: app_commands.Range[float, GUIDANCE_MIN, GUIDANCE_MAX] | None = None,
        safety_tolerance: str | None = None,
    ) -> None:
        if not self._runner.accepting:
            await reply_privately(interaction, "⏳ The bot is restarting. Try again in a moment.")
            return
        refused = self._access.refusal(guild_id=interaction.guild_id, user_id=interaction.user.id)
        if refused is not None:
            await reply_privately(interaction, f"⛔ {refused.message}")
            return
        try:
            params = validate(
                prompt=prompt,
                aspect_ratio=aspect_ratio,
                num_images=num_images,
                seed=seed,
                guidance_scale=guidance_scale,
                safety_tolerance=safety_tolerance,
                rng=self._rng,
            )
        except InvalidOptionError as error:
            await reply_privately(interaction, f"⚠️ {error} Nothing was sent to the image service.")
            return
        refused_by_server = await self._moderate(interaction, params)
        if refused_by_server is not None:
            await reply_privately(interaction, f"⛔ {refused_by_server} Nothing was sent to the image service.")
            return
        async with self._admission:
            now = time.time()
            usage = await usage_for(
                self._jobs.db,
                user_id=interaction.user.id,
                guild_id=interaction.guild_id,
                now=now,
                window_seconds=self._limits.user_window_seconds,
            )
            in_guild = interaction.guild_id is not None
            refused = check(self._limits, usage, params.num_images, now=now, in_guild=in_guild)
            if refused is None:
                # Written down before anything is sent anywhere, so a crash from here on loses nothing.
                job = await self._jobs.create(new_job(interaction, params))
        if refused is not None:
            log.info("user %s refused by %s", interaction.user.id, refused.limit)
            await reply_privately(interaction, f"⛔ {refused.message} Nothing was sent to the image service.")
            return
        try:
            response = await interaction.response.send_message(
                embed=render.placeholder_embed(params, Stage.QUEUED),
                view=cancel_view(job.id),
                allowed_mentions=NO_MENTIONS,
            )
        except discord.HTTPException:
            await self._jobs.transition(job.id, JobState.FAILED, detail="could not answer", outcome="not answered")
            raise
        try:
            job = await self._jobs.transition(
                job.id, JobState.QUEUED, detail="placeholder posted", message_id=response.message_id
            )
        except InvalidTransitionError:
            return  # cancelled with its button before this line ran: nothing to do
        self._runner.start(job)


def new_job(interaction: discord.Interaction, params: ImagineParams) -> NewJob:
    return NewJob(
        interaction_id=interaction.id,
        interaction_token=interaction.token,
        application_id=interaction.application_id,
        guild_id=interaction.guild_id,
        channel_id=interaction.channel_id,
        user_id=interaction.user.id,
        created_at=interaction.created_at.timestamp(),
        params=params,
        file_limit=interaction.filesize_limit,
        channel_nsfw=age_restricted(interaction),
    )


def age_restricted(interaction: discord.Interaction) -> bool:
    is_nsfw = getattr(interaction.channel, "is_nsfw", None)  # threads answer for their parent
    return bool(is_nsfw()) if callable(is_nsfw) else False


def role_ids(user: discord.User | discord.Member) -> list[int]:
    """The member's role ids as Discord sent them with the interaction (`Member.roles` would need
    the server's role cache, which a bot without the members intent may not have)."""
    return [int(r) for r in getattr(user, "_roles", ())]


async def on_tree_error(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
    """A member-facing answer for errors before or inside a command; never a silent failure."""
    if isinstance(error, app_commands.TransformerError):
        message = "⚠️ One of the options has a value I can't use. Pick it from the list Discord offers."
    elif isinstance(error, app_commands.CommandNotFound | app_commands.CommandSignatureMismatch):
        message = "⚠️ This command is out of date. Wait a minute for Discord to update it, then try again."
    else:
        log.error("command failed", exc_info=error)
        message = "Something went wrong inside the bot. Try again; if it keeps happening, tell the bot's host."
    await reply_privately(interaction, message)
