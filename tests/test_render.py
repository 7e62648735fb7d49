"""Rendering and the pure model rules: embeds, spoiler files, NSFW flags, image re-encoding."""

import io

import discord
import pytest
from PIL import Image

from bot import render
from bot.images import shrink_to_fit, sniff_image_type
from bot.jobs.outputs import OutputFile, OutputLink, PreparedOutputs
from bot.jobs.progress import Stage
from bot.params import ImagineParams
from bot.wavespeed.errors import AuthenticationError, PredictionFailedError
from bot.wavespeed.models import Prediction

PARAMS = ImagineParams(prompt="a **bold** fox @everyone", num_images=2, seed=123, guidance_scale=4.5)


def _text(embed: discord.Embed) -> str:
    fields = "\n".join(f"{f.name}: {f.value}" for f in embed.fields)
    return f"{embed.title}\n{embed.description}\n{fields}\n{embed.footer.text}"


def test_placeholder_shows_prompt_options_and_stage():
    queued = _text(render.placeholder_embed(PARAMS, Stage.QUEUED))
    assert "a \\*\\*bold\\*\\* fox @everyone" in queued  # markdown escaped, shown as typed
    assert "seed `123`" in queued and "guidance `4.5`" in queued and "2 images" in queued
    assert "Queued" in queued
    since = discord.utils.utcnow()
    processing = _text(render.placeholder_embed(PARAMS, Stage.PROCESSING, since=since))
    assert "Generating" in processing and f"<t:{int(since.timestamp())}:R>" in processing


def test_long_prompt_is_truncated_within_embed_limits():
    embed = render.placeholder_embed(ImagineParams(prompt="y" * 2000), Stage.QUEUED)
    assert embed.description is not None and len(embed.description) <= render.PROMPT_SHOWN + 2
    assert embed.description.endswith("…")


def test_result_embed_counts_flags_and_explains_links():
    prediction = Prediction(id="pred-1", status="completed", outputs=["u1", "u2"], timings={"inference": 4200})
    outputs = PreparedOutputs(
        files=[OutputFile(0, "a.png", b"x", spoiler=True)],
        links=[OutputLink(1, "https://cdn.example/2.png", spoiler=False)],
        reencoded=[1],
        flags=[True, False],
    )
    text = _text(render.result_embed(PARAMS, prediction, outputs))
    assert "1 of 2 images were flagged" in text
    assert "4.2 s" in text and "`pred-1`" in text
    assert "[image #2](https://cdn.example/2.png)" in text and "#1" in text


def test_flagged_link_is_spoilered():
    outputs = PreparedOutputs(links=[OutputLink(0, "https://cdn.example/1.png", spoiler=True)], flags=[True])
    prediction = Prediction(id="p", status="completed", outputs=["u"])
    assert "||[image #1](https://cdn.example/1.png)||" in _text(render.result_embed(PARAMS, prediction, outputs))


def test_failure_embed_explains_without_raw_exception_text():
    text = _text(render.failure_embed(PARAMS, RuntimeError("secret internals at 0xdead"), prediction_id="p-9"))
    assert "0xdead" not in text and "Something went wrong" in text and "`p-9`" in text
    auth = _text(render.failure_embed(PARAMS, AuthenticationError("401")))
    assert "API key was refused" in auth
    moderated = PredictionFailedError("flagged", prediction_id="p", status="failed", code=1200)
    assert "safety checker" in render.explain(moderated) and not moderated.retryable
    busy = PredictionFailedError("GPU unavailable", prediction_id="p", status="failed", code=5003)
    assert "GPU unavailable" in render.explain(busy) and "again" in render.explain(busy)


def test_spoiler_files_get_the_spoiler_prefix():
    files = render.discord_files([OutputFile(0, "a.png", b"1", True), OutputFile(1, "b.png", b"2", False)])
    assert [f.filename for f in files] == ["SPOILER_a.png", "b.png"]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ([False, False, False], [False, False, False]),
        ([True, False, False], [True, False, False]),
        (None, [True, True, True]),  # null or missing: unknown counts as flagged
        ([False], [False, True, True]),  # short list: the rest count as flagged
        ([False, None, False], [False, True, False]),
    ],
)
def test_nsfw_flags_default_to_flagged(flags, expected):
    prediction = Prediction(id="p", status="completed", outputs=["a", "b", "c"], has_nsfw_contents=flags)
    assert prediction.nsfw_flags() == expected


def _noise_png(size: int) -> bytes:
    image = Image.frombytes("RGB", (size, size), bytes(range(256)) * (size * size * 3 // 256 + 1))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_shrink_to_fit_reencodes_under_the_limit():
    png = _noise_png(512)
    assert sniff_image_type(png) == "png"
    shrunk = shrink_to_fit(png, 40_000)
    assert shrunk is not None and len(shrunk) <= 40_000 and sniff_image_type(shrunk) == "jpeg"
    assert shrink_to_fit(png, 10) is None
    assert shrink_to_fit(b"not an image", 10_000) is None


def test_unreadable_optional_fields_do_not_fail_a_finished_job():
    prediction = Prediction.model_validate(
        {
            "id": "p",
            "status": "completed",
            "outputs": ["a", "b"],
            "has_nsfw_contents": {"not": "a list"},
            "created_at": "yesterday",
            "timings": "n/a",
        }
    )
    assert prediction.nsfw_flags() == [True, True]  # unreadable flags count as flagged
    assert prediction.created_at is None and prediction.inference_ms is None
