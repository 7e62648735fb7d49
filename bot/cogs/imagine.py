"""The `/imagine` slash command: validate, answer at once with a placeholder, hand the job on."""

from __future__ import annotations

import logging
import random

import discord
from discord import app_commands
from discord.ext import commands

from bot import render
from bot.cogs.cancel import cancel_view
from bot.delivery import NO_MENTIONS, reply_privately
from bot.jobs.admission import NOTHING_SENT, Admission
from bot.jobs.progress import Stage
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
from bot.refusals import Refusal

log = logging.getLogger(__name__)

EXPIRED = 10062  # Discord: Unknown interaction (its token's 3 seconds are over)

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
RATIO_CHOICES = [app_commands.Choice(name=_RATIO_NAMES[r], value=r) for r in ASPECT_RATIOS]
TOLERANCE_CHOICES = [app_commands.Choice(name=_TOLERANCE_NAMES[t], value=t) for t in SAFETY_TOLERANCES]


class ImagineCog(commands.Cog):
    def __init__(self, admission: Admission, *, rng: random.Random | None = None) -> None:
        self._admission = admission
        self._rng = rng or random.SystemRandom()

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
    @app_commands.choices(aspect_ratio=RATIO_CHOICES, safety_tolerance=TOLERANCE_CHOICES)
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
            await reply_privately(interaction, f"⚠️ {error} {NOTHING_SENT}")
            return
        await start_from_command(self._admission, interaction, params)

    @app_commands.command(name="imagine-edit", description="Change an image with a sentence, with FLUX.1 Kontext [pro]")
    @app_commands.describe(
        image="The image to edit (PNG, JPEG or WebP)",
        prompt="What to change: 'make it night', 'add a red scarf', 'turn it into a watercolour'",
        aspect_ratio="Shape of the result (default 1:1 square)",
        seed="Same seed + same inputs = same result. Leave empty or -1 for a random seed",
        guidance_scale=f"How closely to follow the instruction, {GUIDANCE_MIN:g} to {GUIDANCE_MAX:g}",
        safety_tolerance="1 is the strictest filter, 5 the most permissive (default 2)",
    )
    @app_commands.choices(aspect_ratio=RATIO_CHOICES, safety_tolerance=TOLERANCE_CHOICES)
    async def imagine_edit(
        self,
        interaction: discord.Interaction,
        image: discord.Attachment,
        prompt: app_commands.Range[str, 1, PROMPT_MAX_LENGTH],
        aspect_ratio: str | None = None,
        seed: app_commands.Range[int, -1, SEED_MAX] | None = None,
        guidance_scale: app_commands.Range[float, GUIDANCE_MIN, GUIDANCE_MAX] | None = None,
        safety_tolerance: str | None = None,
    ) -> None:
        if not (image.content_type or "").startswith("image/") or image.size > EDIT_SOURCE_MAX:
            await reply_privately(
                interaction, f"⚠️ `image` must be a PNG, JPEG or WebP image up to 20 MB. {NOTHING_SENT}"
            )
            return
        try:
            params = validate(
                prompt=prompt,
                aspect_ratio=aspect_ratio,
                seed=seed,
                guidance_scale=guidance_scale,
                safety_tolerance=safety_tolerance,
                image_url=image.url,
                rng=self._rng,
            )
        except InvalidOptionError as error:
            await reply_privately(interaction, f"⚠️ {error} {NOTHING_SENT}")
            return
        await start_from_command(self._admission, interaction, params, kind="edit")


EDIT_SOURCE_MAX = 20 * 1024 * 1024  # what the bot lets WaveSpeed fetch from Discord for an edit


async def start_from_command(
    admission: Admission, interaction: discord.Interaction, params: ImagineParams, *, kind: str = "imagine"
) -> None:
    """Admit the request and answer the interaction with the job's placeholder. Until the answer is
    out, work that can wait does (`bot.jobs.foreground`)."""
    with admission.foreground.answer():
        job = await admission.admit(interaction, params, kind=kind)
        try:
            if isinstance(job, Refusal):
                await reply_privately(interaction, render.refusal_text(job))
                return
            response = await interaction.response.send_message(
                embed=render.placeholder_embed(params, Stage.QUEUED),
                view=cancel_view(job.id),
                allowed_mentions=NO_MENTIONS,
            )
        except discord.HTTPException as error:
            if not isinstance(job, Refusal):
                await admission.not_placed(job)
            if error.code == EXPIRED:  # answered too late (an overloaded bot): nothing was sent, nothing to say
                log.warning("interaction %s expired before the bot could answer it", interaction.id)
                return
            raise
    await admission.placed(job, response.message_id)


async def on_tree_error(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
    """A member-facing answer for errors before or inside a command; never a silent failure."""
    if isinstance(error, app_commands.TransformerError):
        message = "⚠️ One of the options has a value I can't use. Pick it from the list Discord offers."
    elif isinstance(error, app_commands.CommandNotFound | app_commands.CommandSignatureMismatch):
        message = "⚠️ This command is out of date. Wait a minute for Discord to update it, then try again."
    elif isinstance(original := getattr(error, "original", None), discord.HTTPException) and original.code == EXPIRED:
        # The member's 3 seconds ran out (an overloaded bot): there is nobody left to answer, and a
        # traceback per expired command would only make the overload worse.
        log.warning("interaction %s expired before the bot could answer it", interaction.id)
        return
    else:
        log.error("command failed", exc_info=error)
        message = "Something went wrong inside the bot. Try again; if it keeps happening, tell the bot's host."
    try:
        await reply_privately(interaction, message)
    except discord.HTTPException as failure:  # the interaction may have expired meanwhile
        log.warning("could not tell the member about an error: %s", failure)
