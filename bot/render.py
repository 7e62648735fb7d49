"""Pure functions that build what the bot shows: embeds and files. No I/O, easy to unit test."""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from datetime import UTC, datetime

import discord

from bot.i18n import DEFAULT, decimal, t
from bot.jobs.model import JobRecord
from bot.jobs.outputs import OutputFile, PreparedOutputs
from bot.jobs.progress import LIVE_POSITIONS, Stage, Status
from bot.moderation.terms import InvalidTermError
from bot.params import ImagineParams, InvalidOptionError
from bot.refusals import Refusal, Refused
from bot.wavespeed.errors import WaveSpeedError
from bot.wavespeed.models import Prediction

MODEL_NAME = "FLUX.1 Kontext [pro]"
BRAND = discord.Colour(0x7C5CFF)
DONE = discord.Colour(0x2ECC71)
FAILED = discord.Colour(0xE74C3C)
PROMPT_SHOWN = 1500
ALT_TEXT_MAX = 1024  # Discord's limit for an attachment's description

_STAGE_KEYS = {
    Stage.QUEUED: "progress.queued",
    Stage.SUBMITTED: "progress.submitted",
    Stage.PROCESSING: "progress.generating",
}


def quote_prompt(prompt: str, limit: int = PROMPT_SHOWN) -> str:
    shown = discord.utils.escape_markdown(prompt)
    if len(shown) > limit:
        shown = shown[: limit - 1].rstrip() + "…"
    return "> " + shown.replace("\n", "\n> ")


def options_line(params: ImagineParams, locale: str = DEFAULT) -> str:
    return t(
        locale,
        "options.line",
        ratio=params.aspect_ratio,
        count=params.num_images,
        seed=str(params.seed),
        guidance=params.guidance_scale,
        safety=params.safety_tolerance,
    )


def placeholder_embed(
    params: ImagineParams, status: Status | Stage, *, since: datetime | None = None, locale: str = DEFAULT
) -> discord.Embed:
    status = status if isinstance(status, Status) else Status(status)
    text = t(locale, _STAGE_KEYS[status.stage])
    if status.stage is Stage.QUEUED:
        text = _queue_text(status, locale)
    elif since is not None:
        # A relative timestamp ticks in every client without the bot editing the message.
        text = t(locale, "progress.started", stage=text, when=discord.utils.format_dt(since, "R"))
    embed = discord.Embed(title=t(locale, "placeholder.title"), description=quote_prompt(params.prompt), colour=BRAND)
    embed.add_field(name=t(locale, "field.options"), value=options_line(params, locale), inline=False)
    embed.add_field(name=t(locale, "field.status"), value=text, inline=False)
    embed.set_footer(text=MODEL_NAME)
    return embed


def _queue_text(status: Status, locale: str) -> str:
    if status.resumes_at is not None:
        when = discord.utils.format_dt(datetime.fromtimestamp(status.resumes_at, UTC), "R")
        return t(locale, "progress.slowed", when=when)
    if status.position == 1:
        return t(locale, "progress.next")
    if status.position is not None and status.position > LIVE_POSITIONS:
        return t(locale, "progress.far", count=LIVE_POSITIONS)
    if status.position is not None:
        return t(locale, "progress.position", position=status.position)
    return t(locale, _STAGE_KEYS[Stage.QUEUED])


def _flag_note(outputs: PreparedOutputs, locale: str) -> str | None:
    flagged, total = outputs.flagged_count, len(outputs.flags)
    if not flagged:
        return None
    which = t(locale, "flags.which", count=flagged, total=total) if total > 1 else t(locale, "flags.the_image")
    if outputs.withheld:
        return t(locale, "flags.withheld", which=which, count=flagged)
    if outputs.shown_plainly:
        return t(locale, "flags.shown", which=which, count=flagged)
    return t(locale, "flags.spoiler", which=which, count=flagged)


def _size_notes(outputs: PreparedOutputs, locale: str) -> list[str]:
    notes = []
    if outputs.reencoded:
        numbers = ", ".join(f"#{n}" for n in outputs.reencoded)
        notes.append(t(locale, "notes.reencoded", numbers=numbers))
    for link in outputs.links:
        target = f"[{t(locale, 'notes.image_number', number=link.index + 1)}]({link.url})"
        if link.spoiler:
            target = f"||{target}||"
        notes.append(t(locale, "notes.link", target=target))
    return notes


def seconds(locale: str, value: float) -> str:
    return t(locale, "unit.seconds", value=decimal(locale, value))


def result_embed(
    params: ImagineParams, prediction: Prediction, outputs: PreparedOutputs, *, locale: str = DEFAULT
) -> discord.Embed:
    embed = discord.Embed(title=t(locale, "result.title"), description=quote_prompt(params.prompt), colour=DONE)
    embed.add_field(name=t(locale, "field.options"), value=options_line(params, locale), inline=False)
    timing = seconds(locale, prediction.inference_ms / 1000) if prediction.inference_ms else t(locale, "result.na")
    embed.add_field(name=t(locale, "field.inference"), value=timing, inline=True)
    embed.add_field(name=t(locale, "field.prediction"), value=f"`{prediction.id}`", inline=True)
    notes = [note for note in (_flag_note(outputs, locale), *_size_notes(outputs, locale)) if note]
    if notes:
        embed.add_field(name=t(locale, "field.notes"), value="\n".join(notes)[:1024], inline=False)
    embed.set_footer(text=MODEL_NAME)
    return embed


def alt_text(prompt: str, *, flagged: bool, locale: str = DEFAULT) -> str:
    """What a screen reader says for an image: the prompt it was made from, and whether it is flagged."""
    key = "alt.flagged" if flagged else "alt.image"
    frame = t(locale, key, prompt="")
    room = ALT_TEXT_MAX - len(frame)
    shown = " ".join(prompt.split())
    if len(shown) > room:
        shown = shown[: room - 1].rstrip() + "…"
    return t(locale, key, prompt=shown)[:ALT_TEXT_MAX]


def describer(prompt: str, locale: str) -> Callable[[OutputFile], str]:
    return lambda output: alt_text(prompt, flagged=output.spoiler, locale=locale)


def failure_embed(
    params: ImagineParams, error: BaseException, *, prediction_id: str | None = None, locale: str = DEFAULT
) -> discord.Embed:
    embed = discord.Embed(title=t(locale, "failure.title"), description=quote_prompt(params.prompt, 500), colour=FAILED)
    embed.add_field(name=t(locale, "failure.what"), value=explain(error, locale)[:1024], inline=False)
    prediction_id = prediction_id or getattr(error, "prediction_id", None)
    if prediction_id:
        embed.add_field(name=t(locale, "field.prediction"), value=f"`{prediction_id}`", inline=False)
    embed.set_footer(text=MODEL_NAME)
    return embed


def explain(error: BaseException, locale: str = DEFAULT) -> str:
    """What a member reads about a failure: what happened and what to do. Never the raw exception."""
    if isinstance(error, WaveSpeedError):
        message = t(locale, f"error.{error.reason}", status=str(getattr(error, "status", "")), detail=str(error))
        if error.retryable and error.reason not in AGAIN_SAID:
            message += " " + t(locale, "error.try_again")
        return message
    if isinstance(error, discord.Forbidden):
        return t(locale, "error.forbidden")
    return t(locale, "error.internal")


# The failures whose text already says when to try again.
AGAIN_SAID = frozenset({"rate_limited", "server", "connection"})


def delivered_elsewhere_embed(params: ImagineParams, jump_url: str, *, locale: str = DEFAULT) -> discord.Embed:
    embed = discord.Embed(title=t(locale, "result.title"), description=quote_prompt(params.prompt, 500), colour=DONE)
    embed.add_field(name=t(locale, "field.status"), value=t(locale, "result.elsewhere", url=jump_url))
    return embed


def cancelled_embed(params: ImagineParams, *, by: str | None, locale: str = DEFAULT) -> discord.Embed:
    """`by` is the mention of the moderator who cancelled it, or None when the requester did."""
    embed = discord.Embed(
        title=t(locale, "cancelled.title"), description=quote_prompt(params.prompt, 500), colour=FAILED
    )
    value = t(locale, "cancelled.by_moderator", by=by) if by else t(locale, "cancelled.by_you")
    embed.add_field(name=t(locale, "field.status"), value=value, inline=False)
    embed.set_footer(text=MODEL_NAME)
    return embed


def paused_embed(params: ImagineParams, *, prediction_id: str | None, locale: str = DEFAULT) -> discord.Embed:
    """Shown when the bot stops with the job unfinished: the job is saved and resumes on restart."""
    embed = discord.Embed(title=t(locale, "paused.title"), description=quote_prompt(params.prompt, 500), colour=BRAND)
    embed.add_field(name=t(locale, "field.status"), value=t(locale, "paused.status"), inline=False)
    if prediction_id:
        embed.add_field(name=t(locale, "field.prediction"), value=f"`{prediction_id}`", inline=False)
    embed.set_footer(text=MODEL_NAME)
    return embed


def details_text(job: JobRecord, locale: str = DEFAULT) -> str:
    """Everything about a result, one value per line, each in its own code span so a phone can copy it."""
    params = job.params

    def line(key: str, value: object) -> str:
        return f"**{t(locale, key)}** `{value}`"

    fence = "`" * 3
    prompt = params.prompt.replace(fence, "'" * 3)
    lines = [
        f"**{t(locale, 'details.instruction' if params.is_edit else 'details.prompt')}**",
        f"{fence}\n{prompt}\n{fence}",
        line("details.seed", params.seed),
        line("details.ratio", params.aspect_ratio),
        line("details.images", params.num_images),
        line("details.guidance", t(locale, "number", value=params.guidance_scale)),
        line("details.safety", params.safety_tolerance),
        line("details.model", f"{MODEL_NAME} edit" if params.is_edit else MODEL_NAME),
    ]
    if job.prediction_id:
        lines.append(line("field.prediction", job.prediction_id))
    if job.inference_ms is not None:
        lines.append(line("field.inference", seconds(locale, job.inference_ms / 1000)))
    if job.submitted_at is not None and job.finished_at is not None:
        lines.append(line("details.total", seconds(locale, job.finished_at - job.submitted_at)))
    if job.submitted_at is not None:
        lines.append(line("details.waited", seconds(locale, max(0.0, job.submitted_at - job.created_at))))
    lines.append(f"**{t(locale, 'details.requester')}** <@{job.user_id}>")
    if job.source_job_id is not None:
        lines.append(line("details.edited_from" if params.is_edit else "details.rerolled_from", job.source_job_id))
    return "\n".join(lines)[:2000]


def discord_files(files: list[OutputFile], describe: Callable[[OutputFile], str] | None = None) -> list[discord.File]:
    """Fresh `discord.File` objects (they are consumed by an upload, so build them per attempt),
    each with its alt text when `describe` is given."""
    return [
        discord.File(
            io.BytesIO(f.data),
            filename=f.filename,
            spoiler=f.spoiler,
            description=describe(f) if describe else None,
        )
        for f in files
    ]


# -- refusals: the words for each typed reason ------------------------------------------------------------


def option_error_text(error: InvalidOptionError, locale: str = DEFAULT) -> str:
    """A bad option, named as the member's client shows it, and what it must be."""
    name = t(locale, f"command.imagine.{error.option}.name")
    problem = t(locale, f"option.{error.problem}", **error.values)
    return f"⚠️ `{name}` {problem} {t(locale, 'nothing_sent')}"


def term_error_text(error: InvalidTermError, locale: str = DEFAULT) -> str:
    """Why a blocked term was not added, for the admin who typed it."""
    values = dict(error.values)
    if "feature" in values:
        values["feature"] = t(locale, f"term.feature.{values['feature']}")
    return t(locale, f"term.{error.problem}", **values)


def _when(at: float) -> str:
    return discord.utils.format_dt(datetime.fromtimestamp(math.ceil(at), UTC), "R")


def window_text(seconds: float, locale: str) -> str:
    """A rolling window in words: "hour", "3 hours", "20 minutes"."""
    if seconds % 3600 == 0:
        return t(locale, "window.hours", count=int(seconds // 3600))
    return t(locale, "window.minutes", count=max(1, round(seconds / 60)))


def refusal_text(refusal: Refusal, locale: str = DEFAULT) -> str:
    """What the member reads (privately) when a request is refused, with the rule and the figures."""
    r = refusal
    where = t(locale, "refused.where.restricted" if r.age_restricted else "refused.where.normal")
    text = t(
        locale,
        f"refused.{r.reason.name.lower()}",
        count=r.used,
        used=r.used,
        allowed=r.allowed,
        when=_when(r.at or 0),
        window=window_text(r.window_seconds, locale),
        channels=", ".join(f"<#{c}>" for c in r.channels),
        tolerance=r.tolerance,
        cap=r.cap,
        where=where,
    )
    if r.reason is Refused.USER_ACTIVE and r.asked > r.allowed:
        text += " " + t(locale, "refused.user_active.fewer", allowed=r.allowed)
    elif r.reason is Refused.USER_WINDOW:
        then = "refused.user_window.again" if r.at else "refused.user_window.fewer"
        text += " " + t(locale, then, count=r.asked, allowed=r.allowed, when=_when(r.at or 0))
    prefix = "⏳" if r.reason in (Refused.RESTARTING, Refused.BUSY) else "⛔"
    text = f"{prefix} {text}"
    return f"{text} {t(locale, 'nothing_sent')}" if r.nothing_sent else text
