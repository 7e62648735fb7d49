"""Remix: the result's prompt, aspect ratio and seed in a dialog the member changes and runs again as a
new text-to-image job, posted as a reply to the result (through `start_reply`, so through admission).

The dialog is the pressing member's own: its custom id carries the press, so two members remixing
one result never receive each other's answers. The values typed are checked like /imagine's options;
a bad one is refused privately, naming it, and nothing is sent.
"""

from __future__ import annotations

import dataclasses

import discord

from bot import render
from bot.delivery import reply_privately
from bot.i18n import DEFAULT, t
from bot.jobs.model import JobRecord
from bot.params import ASPECT_RATIOS, PROMPT_MAX_LENGTH, SEED_MAX, ImagineParams, InvalidOptionError, validate

SEED_FIELD_MAX = 11  # "-1" or up to 10 digits: a longer text is no seed the API takes


class RemixModal(discord.ui.Modal):
    def __init__(self, job: JobRecord, *, press_id: int, locale: str = DEFAULT) -> None:
        super().__init__(
            title=t(locale, "remix.title"), timeout=None, custom_id=f"imagine:remix-modal:{job.id}:{press_id}"
        )
        self.job = job
        self.locale = locale
        self.prompt: discord.ui.TextInput[RemixModal] = discord.ui.TextInput(
            label=t(locale, "remix.prompt"),
            style=discord.TextStyle.paragraph,
            default=job.params.prompt,
            max_length=PROMPT_MAX_LENGTH,
        )
        self.aspect_ratio: discord.ui.TextInput[RemixModal] = discord.ui.TextInput(
            label=t(locale, "remix.aspect_ratio"), default=job.params.aspect_ratio, max_length=5, required=False
        )
        self.seed: discord.ui.TextInput[RemixModal] = discord.ui.TextInput(
            label=t(locale, "remix.seed"),
            default=str(job.params.seed),
            placeholder=t(locale, "remix.seed_placeholder"),
            max_length=SEED_FIELD_MAX,
            required=False,
        )
        for item in (self.prompt, self.aspect_ratio, self.seed):
            self.add_item(item)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        from bot.cogs.results import start_reply  # the result buttons import this module
        from bot.services import services

        try:
            params = remixed(self.job.params, self.prompt.value, self.aspect_ratio.value, self.seed.value)
        except InvalidOptionError as error:
            await reply_privately(interaction, render.option_error_text(error, self.locale))
            return
        await start_reply(services(interaction), interaction, params, kind="remix", source=self.job)


def remixed(source: ImagineParams, prompt: str, aspect_ratio: str, seed: str) -> ImagineParams:
    """The new job's options: what the member typed, the rest as the source had them. A remix is
    always text to image (a remix of an edit makes new images from its prompt). An empty seed or
    -1 is a random one; an empty aspect ratio the source's."""
    seed_text = seed.strip()
    if seed_text in ("", "-1"):
        chosen: int | None = None
    elif seed_text.isdigit() and int(seed_text) <= SEED_MAX:
        chosen = int(seed_text)
    else:
        raise InvalidOptionError("seed", "seed", high=str(SEED_MAX))
    ratio = aspect_ratio.strip() or source.aspect_ratio
    if ratio not in ASPECT_RATIOS:
        raise InvalidOptionError("aspect_ratio", "one_of", choices=", ".join(ASPECT_RATIOS))
    params = validate(
        prompt=prompt,
        aspect_ratio=ratio,
        num_images=source.num_images,
        seed=chosen,
        guidance_scale=source.guidance_scale,
        safety_tolerance=source.safety_tolerance,
    )
    return dataclasses.replace(params, image_url=None)
