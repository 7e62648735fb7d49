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
from bot.i18n import resolve, t
from bot.i18n.commands import described, en
from bot.jobs.admission import Admission
from bot.jobs.progress import Stage
from bot.params import (
    ASPECT_RATIOS,
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
IMAGINE_OPTIONS = ("prompt", "aspect_ratio", "num_images", "seed", "guidance_scale", "safety_tolerance")
EDIT_OPTIONS = (
    "image",
    "prompt",
    "image2",
    "image3",
    "image4",
    "aspect_ratio",
    "seed",
    "guidance_scale",
    "safety_tolerance",
)

# Choice names are English here and translated at sync (`bot.i18n.commands`), like every other
# command text: the catalogue holds them under `choice.<value>`.
RATIO_CHOICES = [app_commands.Choice(name=en(f"choice.{r}"), value=r) for r in ASPECT_RATIOS]
TOLERANCE_CHOICES = [app_commands.Choice(name=en(f"choice.{v}"), value=v) for v in SAFETY_TOLERANCES]


class ImagineCog(commands.Cog):
    def __init__(self, admission: Admission, *, rng: random.Random | None = None) -> None:
        self._admission = admission
        self._rng = rng or random.SystemRandom()

    @app_commands.command(name="imagine", description=en("command.imagine.description"))
    @app_commands.describe(**described("imagine", IMAGINE_OPTIONS))
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
            await reply_privately(interaction, render.option_error_text(error, resolve(interaction.locale)))
            return
        await start_from_command(self._admission, interaction, params)

    @app_commands.command(name="imagine-edit", description=en("command.imagine-edit.description"))
    @app_commands.describe(**described("imagine-edit", EDIT_OPTIONS))
    @app_commands.choices(aspect_ratio=RATIO_CHOICES, safety_tolerance=TOLERANCE_CHOICES)
    async def imagine_edit(
        self,
        interaction: discord.Interaction,
        image: discord.Attachment,
        prompt: app_commands.Range[str, 1, PROMPT_MAX_LENGTH],
        image2: discord.Attachment | None = None,
        image3: discord.Attachment | None = None,
        image4: discord.Attachment | None = None,
        aspect_ratio: str | None = None,
        seed: app_commands.Range[int, -1, SEED_MAX] | None = None,
        guidance_scale: app_commands.Range[float, GUIDANCE_MIN, GUIDANCE_MAX] | None = None,
        safety_tolerance: str | None = None,
    ) -> None:
        # One image goes to the edit endpoint; two to four, in the order given, to the multi one.
        given = {"image": image, "image2": image2, "image3": image3, "image4": image4}
        for option, attachment in given.items():
            if attachment is not None and not usable_source(attachment):
                locale = resolve(interaction.locale)
                name = t(locale, f"command.imagine-edit.{option}.name")
                refused = t(locale, "option.bad_reference", name=name) + " " + t(locale, "nothing_sent")
                await reply_privately(interaction, "⚠️ " + refused)
                return
        urls = tuple(a.url for a in given.values() if a is not None)
        try:
            params = validate(
                prompt=prompt,
                aspect_ratio=aspect_ratio,
                seed=seed,
                guidance_scale=guidance_scale,
                safety_tolerance=safety_tolerance,
                image_url=urls[0] if len(urls) == 1 else None,
                image_urls=urls if len(urls) > 1 else (),
                rng=self._rng,
            )
        except InvalidOptionError as error:
            await reply_privately(interaction, render.option_error_text(error, resolve(interaction.locale)))
            return
        await start_from_command(self._admission, interaction, params, kind="edit")


EDIT_SOURCE_MAX = 20 * 1024 * 1024  # what the bot lets WaveSpeed fetch from Discord for an edit
EDIT_SOURCE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp"})


def usable_source(attachment: discord.Attachment) -> bool:
    """An image WaveSpeed can edit: PNG, JPEG or WebP (as Discord reports its type), not too big."""
    kind = (attachment.content_type or "").split(";")[0].strip().lower()
    return kind in EDIT_SOURCE_TYPES and 0 < attachment.size <= EDIT_SOURCE_MAX


async def start_from_command(
    admission: Admission, interaction: discord.Interaction, params: ImagineParams, *, kind: str = "imagine"
) -> None:
    """Admit the request and answer the interaction with the job's placeholder. Until the answer is
    out, work that can wait does (`bot.jobs.foreground`)."""
    with admission.foreground.answer():
        job = await admission.admit(interaction, params, kind=kind)
        locale = resolve(interaction.locale)
        try:
            if isinstance(job, Refusal):
                await reply_privately(interaction, render.refusal_text(job, locale))
                return
            response = await interaction.response.send_message(
                embed=render.placeholder_embed(params, Stage.QUEUED, locale=locale),
                view=cancel_view(job.id, locale),
                allowed_mentions=NO_MENTIONS,
            )
        except discord.HTTPException:
            # Nothing was sent; an answer too late (an overloaded bot) is one warning in on_tree_error.
            if not isinstance(job, Refusal):
                await admission.not_placed(job)
            raise
    await admission.placed(job, response.message_id)


async def on_tree_error(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
    """A member-facing answer for errors before or inside a command; never a silent failure."""
    locale = resolve(interaction.locale)
    if isinstance(error, app_commands.TransformerError):
        message = "⚠️ " + t(locale, "answer.bad_value")
    elif isinstance(error, app_commands.CommandNotFound | app_commands.CommandSignatureMismatch):
        message = "⚠️ " + t(locale, "answer.out_of_date")
    elif isinstance(original := getattr(error, "original", None), discord.HTTPException) and original.code == EXPIRED:
        # The member's 3 seconds ran out (an overloaded bot): there is nobody left to answer, and a
        # traceback per expired command would only make the overload worse.
        log.warning("interaction %s expired before the bot could answer it", interaction.id)
        return
    else:
        log.error("command failed", exc_info=error)
        message = t(locale, "error.internal")
    try:
        await reply_privately(interaction, message)
    except discord.HTTPException as failure:  # the interaction may have expired meanwhile
        log.warning("could not tell the member about an error: %s", failure)
