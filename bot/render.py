"""Pure functions that build what the bot shows: embeds and files. No I/O, easy to unit test."""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from datetime import UTC, datetime

import discord

from bot.jobs.model import JobRecord
from bot.jobs.outputs import OutputFile, PreparedOutputs
from bot.jobs.progress import LIVE_POSITIONS, Stage, Status
from bot.limits import describe_window
from bot.params import ImagineParams
from bot.refusals import Refusal, Refused
from bot.wavespeed.errors import WaveSpeedError
from bot.wavespeed.models import Prediction

MODEL_NAME = "FLUX.1 Kontext [pro]"
BRAND = discord.Colour(0x7C5CFF)
DONE = discord.Colour(0x2ECC71)
FAILED = discord.Colour(0xE74C3C)
PROMPT_SHOWN = 1500

_STAGE_TEXT = {
    Stage.QUEUED: "⏳ **Queued** · waiting to start",
    Stage.SUBMITTED: "📨 **Submitted** to WaveSpeed",
    Stage.PROCESSING: "🎨 **Generating**",
}


def quote_prompt(prompt: str, limit: int = PROMPT_SHOWN) -> str:
    shown = discord.utils.escape_markdown(prompt)
    if len(shown) > limit:
        shown = shown[: limit - 1].rstrip() + "…"
    return "> " + shown.replace("\n", "\n> ")


def options_line(params: ImagineParams) -> str:
    images = f"{params.num_images} image{'s' if params.num_images > 1 else ''}"
    return (
        f"`{params.aspect_ratio}` · {images} · seed `{params.seed}` · "
        f"guidance `{params.guidance_scale:g}` · safety `{params.safety_tolerance}`"
    )


def placeholder_embed(params: ImagineParams, status: Status | Stage, *, since: datetime | None = None) -> discord.Embed:
    status = status if isinstance(status, Status) else Status(status)
    text = _STAGE_TEXT[status.stage]
    if status.stage is Stage.QUEUED:
        text = _queue_text(status)
    elif since is not None:
        # A relative timestamp ticks in every client without the bot editing the message.
        text += f" · started {discord.utils.format_dt(since, 'R')}"
    embed = discord.Embed(title="Imagining…", description=quote_prompt(params.prompt), colour=BRAND)
    embed.add_field(name="Options", value=options_line(params), inline=False)
    embed.add_field(name="Status", value=text, inline=False)
    embed.set_footer(text=MODEL_NAME)
    return embed


def _queue_text(status: Status) -> str:
    if status.resumes_at is not None:
        when = discord.utils.format_dt(datetime.fromtimestamp(status.resumes_at, UTC), "R")
        return f"⏳ **Queued** · WaveSpeed asked us to slow down; trying again {when}"
    if status.position == 1:
        return "⏳ **Queued** · next in line"
    if status.position is not None and status.position > LIVE_POSITIONS:
        return f"⏳ **Queued** · more than {LIVE_POSITIONS} requests ahead"
    if status.position is not None:
        return f"⏳ **Queued** · #{status.position} in line"
    return _STAGE_TEXT[Stage.QUEUED]


def _flag_note(outputs: PreparedOutputs) -> str | None:
    flagged, total = outputs.flagged_count, len(outputs.flags)
    if not flagged:
        return None
    which = "The image was" if total == 1 else f"{flagged} of {total} images were"
    if outputs.withheld:
        return f"🚫 {which} flagged as possibly sensitive and withheld: this server doesn't post them here."
    if outputs.shown_plainly:
        return f"🔞 {which} flagged as possibly sensitive; shown without a spoiler in this age-restricted channel."
    return f"🙈 {which} flagged as possibly sensitive and {'is' if flagged == 1 else 'are'} behind a spoiler."


def _size_notes(outputs: PreparedOutputs) -> list[str]:
    notes = []
    if outputs.reencoded:
        numbers = ", ".join(f"#{n}" for n in outputs.reencoded)
        notes.append(f"📦 Re-encoded as JPEG to fit Discord's upload limit: {numbers}.")
    for link in outputs.links:
        target = f"[image #{link.index + 1}]({link.url})"
        if link.spoiler:
            target = f"||{target}||"
        notes.append(f"🔗 Too large to upload here, open {target} (the link expires, so save it).")
    return notes


def result_embed(params: ImagineParams, prediction: Prediction, outputs: PreparedOutputs) -> discord.Embed:
    embed = discord.Embed(title="✨ Imagined", description=quote_prompt(params.prompt), colour=DONE)
    embed.add_field(name="Options", value=options_line(params), inline=False)
    timing = f"{prediction.inference_ms / 1000:.1f} s" if prediction.inference_ms else "n/a"
    embed.add_field(name="Inference", value=timing, inline=True)
    embed.add_field(name="Prediction", value=f"`{prediction.id}`", inline=True)
    notes = [note for note in (_flag_note(outputs), *_size_notes(outputs)) if note]
    if notes:
        embed.add_field(name="Notes", value="\n".join(notes)[:1024], inline=False)
    embed.set_footer(text=MODEL_NAME)
    return embed


def failure_embed(params: ImagineParams, error: BaseException, *, prediction_id: str | None = None) -> discord.Embed:
    embed = discord.Embed(title="Couldn't make your image", description=quote_prompt(params.prompt, 500), colour=FAILED)
    embed.add_field(name="What happened", value=explain(error)[:1024], inline=False)
    prediction_id = prediction_id or getattr(error, "prediction_id", None)
    if prediction_id:
        embed.add_field(name="Prediction", value=f"`{prediction_id}`", inline=False)
    embed.set_footer(text=MODEL_NAME)
    return embed


def explain(error: BaseException) -> str:
    """What a member reads about a failure: what happened and what to do. Never the raw exception."""
    if isinstance(error, WaveSpeedError):
        message = error.user_message
        if error.retryable and "again" not in message:
            message += " Try again in a moment."
        return message
    if isinstance(error, discord.Forbidden):
        return (
            "I couldn't post the images in this channel: I'm missing a permission there. "
            "Ask a moderator to let the bot Send Messages, Embed Links and Attach Files here."
        )
    return "Something went wrong inside the bot. Try again; if it keeps happening, tell the bot's host."


def delivered_elsewhere_embed(params: ImagineParams, jump_url: str) -> discord.Embed:
    embed = discord.Embed(title="✨ Imagined", description=quote_prompt(params.prompt, 500), colour=DONE)
    embed.add_field(name="Status", value=f"Finished. The images are in [a new message]({jump_url}).")
    return embed


def cancelled_embed(params: ImagineParams, *, by: str) -> discord.Embed:
    embed = discord.Embed(title="Cancelled", description=quote_prompt(params.prompt, 500), colour=FAILED)
    embed.add_field(name="Status", value=f"Cancelled by {by} before it started. Nothing was charged.", inline=False)
    embed.set_footer(text=MODEL_NAME)
    return embed


def paused_embed(params: ImagineParams, *, prediction_id: str | None) -> discord.Embed:
    """Shown when the bot stops with the job unfinished: the job is saved and resumes on restart."""
    embed = discord.Embed(title="⏸ Paused", description=quote_prompt(params.prompt, 500), colour=BRAND)
    embed.add_field(
        name="Status",
        value="The bot is restarting. Your request is saved: this message updates when the bot is back.",
        inline=False,
    )
    if prediction_id:
        embed.add_field(name="Prediction", value=f"`{prediction_id}`", inline=False)
    embed.set_footer(text=MODEL_NAME)
    return embed


def details_text(job: JobRecord) -> str:
    """Everything about a result, one value per line, each in its own code span so a phone can copy it."""
    params = job.params
    fence = "`" * 3
    prompt = params.prompt.replace(fence, "'" * 3)
    lines = [
        f"**{'Edit instruction' if params.is_edit else 'Prompt'}**",
        f"{fence}\n{prompt}\n{fence}",
        f"**Seed** `{params.seed}`",
        f"**Aspect ratio** `{params.aspect_ratio}`",
        f"**Images** `{params.num_images}`",
        f"**Guidance scale** `{params.guidance_scale:g}`",
        f"**Safety tolerance** `{params.safety_tolerance}`",
        f"**Model** `{'FLUX.1 Kontext [pro] edit' if params.is_edit else MODEL_NAME}`",
    ]
    if job.prediction_id:
        lines.append(f"**Prediction** `{job.prediction_id}`")
    if job.inference_ms is not None:
        lines.append(f"**Inference** `{job.inference_ms / 1000:.1f} s`")
    if job.submitted_at is not None and job.finished_at is not None:
        lines.append(f"**Submitted to delivered** `{job.finished_at - job.submitted_at:.1f} s`")
    if job.submitted_at is not None:
        lines.append(f"**Waited in the queue** `{max(0.0, job.submitted_at - job.created_at):.1f} s`")
    lines.append(f"**Requested by** <@{job.user_id}>")
    if job.source_job_id is not None:
        lines.append(f"**{'Edited' if params.is_edit else 'Re-rolled'} from job** `{job.source_job_id}`")
    return "\n".join(lines)[:2000]


def discord_files(files: list[OutputFile]) -> list[discord.File]:
    """Fresh `discord.File` objects (they are consumed by an upload, so build them per attempt)."""
    return [discord.File(io.BytesIO(f.data), filename=f.filename, spoiler=f.spoiler) for f in files]


# -- refusals: the words for each typed reason ------------------------------------------------------------


def _when(at: float) -> str:
    return discord.utils.format_dt(datetime.fromtimestamp(math.ceil(at), UTC), "R")


def _images(n: int) -> str:
    return f"{n} image{'s' if n != 1 else ''}"


def refusal_text(refusal: Refusal) -> str:
    """What the member reads (privately) when a request is refused, with the rule and the figures."""
    text = _REFUSALS[refusal.reason](refusal)
    prefix = "⏳" if refusal.reason in (Refused.RESTARTING, Refused.BUSY) else "⛔"
    return f"{prefix} {text} Nothing was sent to the image service." if refusal.nothing_sent else f"{prefix} {text}"


def _user_active(r: Refusal) -> str:
    also = f", or ask for at most {r.allowed} at once." if r.asked > r.allowed else "."
    return (
        f"You already have {_images(r.used)} queued or in progress, and the limit is {r.allowed} at a time. "
        f"Try again when one of them is done{also}"
    )


def _user_window(r: Refusal) -> str:
    window = describe_window(r.window_seconds)
    then = (
        f"You can ask for {_images(r.asked)} again {_when(r.at)}." if r.at else f"Ask for at most {r.allowed} at once."
    )
    return f"You've asked for {_images(r.used)} in the last {window}; the limit is {r.allowed} per {window}. {then}"


def _tolerance(r: Refusal) -> str:
    where = "age-restricted channels" if r.age_restricted else "channels that aren't age-restricted"
    return (
        f"`safety_tolerance` {r.tolerance} is above this server's cap of {r.cap} for {where}. Choose {r.cap} or lower."
    )


_REFUSALS: dict[Refused, Callable[[Refusal], str]] = {
    Refused.RESTARTING: lambda r: "The bot is restarting. Try again in a moment.",
    Refused.BUSY: lambda r: "The bot is busy right now. Try again in a moment.",
    Refused.DMS_OFF: lambda r: "I only make images in servers, not in direct messages.",
    Refused.GUILD_NOT_ALLOWED: lambda r: "This bot isn't enabled on this server. Ask the bot's host.",
    Refused.USER_NOT_ALLOWED: lambda r: "You're not on this bot's list of members who may use it.",
    Refused.CHANNEL_GATE: lambda r: (
        "Images can't be made in this channel. Try " + ", ".join(f"<#{c}>" for c in r.channels) + "."
    ),
    Refused.ROLE_GATE: lambda r: "Making images here is limited to certain roles, and you don't have one of them.",
    Refused.TOLERANCE_CAP: _tolerance,
    Refused.USER_ACTIVE: _user_active,
    Refused.USER_WINDOW: _user_window,
    Refused.GUILD_DAILY: lambda r: (
        f"This server has used {r.used} of its {r.allowed} images for today. "
        f"The budget resets {_when(r.at or 0)} (midnight UTC)."
    ),
    Refused.GLOBAL_DAILY: lambda r: (
        f"The bot has reached its daily budget of {r.allowed} images. It resets {_when(r.at or 0)} (midnight UTC)."
    ),
    Refused.BLOCKED_TERM: lambda r: (
        "Your prompt contains something this server doesn't allow. Rephrase it and try again."
    ),
    Refused.TOO_COMPLEX: lambda r: (
        "This prompt is too long to check once its special characters are expanded. Shorten it."
    ),
}
