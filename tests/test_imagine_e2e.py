"""/imagine end to end: the real bot against fake Discord and WaveSpeed servers on 127.0.0.1."""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

import discord

from tests import dbread
from tests.fakes.recorder import Recorded
from tests.fakes.wavespeed import Scenario
from tests.helpers import embeds_text, wait_until

MESSAGE_ROUTES = ("/callback", "/messages")


def message_requests(bot) -> list[Recorded]:
    """Every request that posts or edits a message (interaction responses included)."""
    return [
        r
        for r in bot.discord.requests
        if r.method in ("POST", "PATCH") and any(m in r.path for m in MESSAGE_ROUTES) and r.json is not None
    ]


def allowed_mentions(request: Recorded) -> Any:
    body = request.json
    return body.get("data", body).get("allowed_mentions") if body.get("type") else body.get("allowed_mentions")


def filenames(request: Recorded) -> list[str]:
    return [f.filename for f in request.files]


async def test_one_image_from_command_to_attachment(start_bot, wavespeed):
    bot = await start_bot()
    payload = await bot.imagine(prompt="a lighthouse at dusk", seed=1234, guidance_scale=4.0, aspect_ratio="16:9")

    final = await bot.final_edit(payload)

    callback = bot.discord.requests.matching(lambda r: r.path.endswith("/callback"))[0]
    assert callback.json["type"] == 4 and not callback.json["data"].get("flags")  # public placeholder
    assert "Queued" in embeds_text(callback) and "a lighthouse at dusk" in embeds_text(callback)
    [submit] = wavespeed.accepted_submits()
    assert submit.path == "/api/v3/wavespeed-ai/flux-kontext-pro/text-to-image"
    assert submit.json == {
        "prompt": "a lighthouse at dusk",
        "aspect_ratio": "16:9",
        "num_images": 1,
        "seed": 1234,
        "guidance_scale": 4.0,
        "safety_tolerance": "2",
    }
    [prediction_id] = wavespeed.predictions
    assert filenames(final) == [f"imagine_{prediction_id[:12]}_1.png"]
    assert final.files[0].data[:8] == b"\x89PNG\r\n\x1a\n"
    text = embeds_text(final)
    assert "seed `1234`" in text and f"`{prediction_id}`" in text and "Inference" in text
    # Outputs come from a CDN: the API key is never sent there.
    assert wavespeed.downloads() and all(
        "authorization" not in {k.lower() for k in d.headers} for d in wavespeed.downloads()
    )


async def test_four_images_are_spoilered_exactly_where_flagged(start_bot, wavespeed):
    wavespeed.scenario = Scenario(nsfw_flags=[False, True, False, True])
    bot = await start_bot()
    final = await bot.final_edit(await bot.imagine(prompt="four foxes", num_images=4))

    names = filenames(final)
    assert len(names) == 4
    assert [n.startswith("SPOILER_") for n in names] == [False, True, False, True]
    assert "2 of 4 images were flagged" in embeds_text(final)


async def test_missing_null_and_short_flags_count_as_flagged(start_bot, wavespeed):
    wavespeed.scenario_by_prompt = {
        "missing": Scenario(nsfw_field="missing"),
        "null": Scenario(nsfw_field="null"),
        "short": Scenario(nsfw_flags=[False]),
    }
    bot = await start_bot()
    finals = {}
    for prompt in ("missing", "null", "short"):
        finals[prompt] = await bot.final_edit(await bot.imagine(prompt=prompt, num_images=2))

    assert [n.startswith("SPOILER_") for n in filenames(finals["missing"])] == [True, True]
    assert [n.startswith("SPOILER_") for n in filenames(finals["null"])] == [True, True]
    assert [n.startswith("SPOILER_") for n in filenames(finals["short"])] == [False, True]


async def test_progress_edits_follow_the_status_at_most_one_per_interval(start_bot, wavespeed):
    # Queued at WaveSpeed for 2 s: longer than one progress interval, so "Submitted" is shown before
    # "Generating" overtakes it (a shorter stage is skipped, which is the point of coalescing).
    wavespeed.scenario = Scenario(queue_seconds=2.0, inference_seconds=3.5)
    bot = await start_bot()
    payload = await bot.imagine(prompt="a slow painting")
    final = await bot.final_edit(payload)

    edits = [r for r in message_requests(bot) if r.method == "PATCH" and payload["token"] in r.path]
    progress = [r for r in edits if r is not final]
    texts = [embeds_text(r) for r in progress]
    assert any("Submitted" in t for t in texts) and any("Generating" in t for t in texts)
    assert all("<t:" in t and ":R>" in t for t in texts)  # the relative timestamp ticks by itself
    times = [r.at for r in progress]
    assert all(later - earlier >= 1.45 for earlier, later in itertools.pairwise(times))
    assert edits[-1] is final and filenames(final)


async def test_failed_prediction_becomes_a_clear_message(start_bot, wavespeed):
    wavespeed.scenario = Scenario(final_status="failed", error="NSFW content detected", error_code=1200)
    bot = await start_bot()
    final = await bot.final_edit(await bot.imagine(prompt="something risky"))

    [prediction_id] = wavespeed.predictions
    text = embeds_text(final)
    assert "Couldn't make your image" in text and "safety checker" in text and prediction_id in text
    assert not final.files


async def test_unknown_final_statuses_are_failures(start_bot, wavespeed):
    wavespeed.scenario = Scenario(final_status="cancelled", error="cancelled by the system", error_code=None)
    bot = await start_bot()
    final = await bot.final_edit(await bot.imagine(prompt="cancelled one"))
    assert "cancelled" in embeds_text(final) and "Couldn't make your image" in embeds_text(final)


async def test_bad_api_key_is_reported_and_not_retried(start_bot, wavespeed):
    bot = await start_bot(wavespeed_api_key="ws-wrong-key")
    final = await bot.final_edit(await bot.imagine(prompt="a cat"))

    assert "API key was refused" in embeds_text(final)
    assert len(wavespeed.submits()) == 1 and not wavespeed.accepted_submits()


async def test_429_on_submit_waits_retry_after_and_bills_once(start_bot, wavespeed):
    wavespeed.scenario = Scenario(submit_responses=[429], retry_after=1.0)
    bot = await start_bot()
    final = await bot.final_edit(await bot.imagine(prompt="a busy day"))

    first, second = wavespeed.submits()
    assert first.status == 429 and second.status == 200
    assert second.at - first.at >= 1.0  # Retry-After honoured
    assert len(wavespeed.accepted_submits()) == 1 and filenames(final)


async def test_5xx_and_malformed_polls_are_retried(start_bot, wavespeed):
    wavespeed.scenario = Scenario(result_responses=[503, "malformed", "html", 500])
    bot = await start_bot()
    final = await bot.final_edit(await bot.imagine(prompt="through the storm"))

    assert filenames(final) and len(wavespeed.accepted_submits()) == 1
    assert [r.status for r in wavespeed.result_polls()][:4] == [503, 200, 502, 500]


async def test_submit_that_times_out_is_never_sent_twice(start_bot, wavespeed):
    wavespeed.scenario = Scenario(submit_responses=["accept-then-hang"])
    bot = await start_bot(job_timeout_seconds=2)  # bounds the request timeout too
    final = await bot.final_edit(await bot.imagine(prompt="lost answer"))

    assert len(wavespeed.submits()) == 1
    assert "not charged twice" in embeds_text(final)


async def test_job_timeout_stops_waiting_when_the_timeout_says(start_bot, wavespeed):
    """JOB_TIMEOUT_SECONDS is honoured to the second: the 15 s grace is only for jobs resumed after a
    restart (it used to apply to every job, so a 2 s timeout waited 15 s)."""
    wavespeed.scenario = Scenario(inference_seconds=60)
    bot = await start_bot(job_timeout_seconds=2)
    final = await bot.final_edit(await bot.imagine(prompt="forever"))
    [prediction_id] = wavespeed.predictions
    assert "too long" in embeds_text(final) and prediction_id in embeds_text(final)
    [submit] = wavespeed.accepted_submits()
    elapsed = final.at - submit.at
    assert 1.9 <= elapsed <= 3.5, f"the job gave up {elapsed:.2f} s after its submit, not about 2 s"


async def test_completed_without_outputs_is_an_error(start_bot, wavespeed):
    wavespeed.scenario = Scenario(outputs_count=0)
    bot = await start_bot()
    final = await bot.final_edit(await bot.imagine(prompt="empty"))
    assert "could not be fetched" in embeds_text(final) and not final.files


async def test_out_of_range_options_get_an_ephemeral_error_and_no_api_call(start_bot, wavespeed):
    bot = await start_bot()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"prompt": "x", "num_images": 9}, "num_images"),
        ({"prompt": "x", "guidance_scale": 11.5}, "guidance_scale"),
        ({"prompt": "x", "seed": -5}, "seed"),
        ({"prompt": "x" * 2001}, "prompt"),
        ({"prompt": "x", "aspect_ratio": "5:4"}, "aspect_ratio"),
        ({"prompt": "x", "safety_tolerance": "9"}, "safety_tolerance"),
    ]
    for options, expected in cases:
        payload = await bot.imagine(**options)
        [callback] = await bot.discord.requests.wait_for(
            lambda r, t=payload["token"]: r.path.endswith(f"/{t}/callback")
        )
        assert callback.json["data"]["flags"] & 64, options  # ephemeral
        assert expected.lower() in embeds_text(callback).lower(), embeds_text(callback)
    assert not wavespeed.submits()


async def test_nobody_is_pinged(start_bot, wavespeed):
    bot = await start_bot()
    payload = await bot.imagine(prompt="@everyone look <@&123456789012345678> @here <@42>")
    await bot.final_edit(payload)

    requests = message_requests(bot)
    assert len(requests) >= 2
    for request in requests:
        assert allowed_mentions(request) == {"parse": []}, request.path


async def test_oversized_image_is_reencoded_and_said(start_bot, wavespeed):
    wavespeed.scenario = Scenario(image_size=(900, 900), image_noise=True)  # ~2.4 MB incompressible PNGs
    bot = await start_bot()
    limit = 1024 * 1024
    final = await bot.final_edit(await bot.imagine(prompt="noise", num_images=2, attachment_size_limit=limit))

    assert len(final.files) == 2 and all(f.size <= limit for f in final.files)
    assert all(f.filename.endswith(".jpeg") for f in final.files)
    assert "Re-encoded as JPEG" in embeds_text(final)


async def test_huge_image_over_the_message_limit_still_delivers(start_bot, wavespeed):
    wavespeed.scenario = Scenario(image_size=(2400, 2400), image_noise=True)  # > 10 MiB each
    bot = await start_bot()
    final = await bot.final_edit(await bot.imagine(prompt="huge", num_images=3), timeout=60)

    assert final.status == 200
    assert len(final.files) == 3 and sum(f.size for f in final.files) <= 25 * 1024 * 1024
    assert all(f.size <= 10 * 1024 * 1024 for f in final.files)
    assert "Re-encoded" in embeds_text(final)


async def test_expired_token_delivers_in_channel_mentioning_only_the_requester(start_bot, wavespeed):
    bot = await start_bot()
    requester = 555000111222333444
    # Created 14m45s ago: the token dies during the job.
    created = discord.utils.utcnow() - timedelta(minutes=14, seconds=45)
    payload = await bot.imagine(prompt="@everyone late night", user_id=requester, created_at=created, num_images=2)
    channel_id = int(payload["channel_id"])

    [sent] = await bot.discord.requests.wait_for(
        lambda r: r.method == "POST" and r.path == f"/channels/{channel_id}/messages", timeout=20
    )
    assert sent.json["content"] == f"<@{requester}>"
    assert sent.json["allowed_mentions"] == {"parse": [], "users": [requester]}
    assert len(sent.files) == 2
    # The placeholder is not left saying "Queued": it points at the new message.
    placeholder_id = int(bot.discord.original(payload["token"])["id"])
    [pointer] = await bot.discord.requests.wait_for(
        lambda r: (
            r.method == "PATCH"
            and r.path == f"/channels/{channel_id}/messages/{placeholder_id}"
            and "Finished" in embeds_text(r)
        )
    )
    assert "Queued" not in embeds_text(pointer)
    assert bot.discord.messages[placeholder_id] and not bot.discord.messages[placeholder_id].get("attachments")


async def test_token_killed_early_falls_back_without_retrying_it(start_bot, wavespeed):
    wavespeed.scenario = Scenario(inference_seconds=1.0)
    bot = await start_bot()
    payload = await bot.imagine(prompt="dead token")
    await bot.discord.requests.wait_for(lambda r: r.path.endswith(f"/{payload['token']}/callback"))
    bot.discord.expire_token(payload["token"])
    channel_id = int(payload["channel_id"])

    [sent] = await bot.discord.requests.wait_for(
        lambda r: r.method == "POST" and r.path == f"/channels/{channel_id}/messages", timeout=20
    )
    assert sent.files
    dead = [r for r in bot.discord.requests if payload["token"] in r.path and r.status == 401]
    assert len(dead) == 1  # one 401, then the bot stopped using the dead token


async def test_missing_permission_sends_the_result_by_dm(start_bot, wavespeed):
    bot = await start_bot()
    created = discord.utils.utcnow() - timedelta(minutes=14, seconds=45)  # token dies: channel route needed
    payload = await bot.imagine(prompt="no perms", created_at=created, user_id=777000111222333444)
    channel_id = int(payload["channel_id"])
    bot.discord.forbidden_channels.add(channel_id)

    [refused] = await bot.discord.requests.wait_for(
        lambda r: r.method == "POST" and r.path == f"/channels/{channel_id}/messages"
    )
    assert refused.status == 403
    [opened] = await bot.discord.requests.wait_for(lambda r: r.method == "POST" and r.path == "/users/@me/channels")
    assert opened.json == {"recipient_id": 777000111222333444}
    [dm] = await bot.discord.requests.wait_for(
        lambda r: r.method == "POST" and r.path.startswith("/channels/") and r.status == 200 and bool(r.files)
    )
    assert "missing a permission" in dm.json["content"] and dm.json["allowed_mentions"] == {"parse": []}
    assert len(wavespeed.accepted_submits()) == 1


async def test_secrets_never_leave_their_own_service_or_reach_the_logs(start_bot, wavespeed, log_lines):
    wavespeed.scenario = Scenario(result_responses=[503])
    bot = await start_bot()
    await bot.final_edit(await bot.imagine(prompt="secret keeper"))
    bad = await start_bot(wavespeed_api_key="ws-another-secret-key")
    await bad.final_edit(await bad.imagine(prompt="with a wrong key"))

    token, key = bot.discord.token, wavespeed.api_key
    discord_requests = list(bot.discord.requests)
    assert discord_requests and not [r for r in discord_requests if key in r.text() or "ws-another" in r.text()]
    assert not [r for r in wavespeed.requests if token in r.text()]
    lines = log_lines()
    assert lines and not [line for line in lines if token in line or key in line or "ws-another-secret" in line]


async def test_an_interaction_answered_too_late_is_dropped_quietly(start_bot, wavespeed, log_lines, database_url):
    bot = await start_bot()
    payload = bot.discord.interaction("imagine", {"prompt": "too late"})
    await bot.discord.dispatch_interaction(payload, backdate=3.5)  # the 3-second window is already gone
    [callback] = await bot.discord.requests.wait_for(lambda r: r.path.endswith(f"/{payload['token']}/callback"))

    assert callback.status == 404 and not wavespeed.submits()

    def states() -> list[tuple[str, str]]:
        return dbread.rows(database_url, "SELECT state, outcome FROM jobs")

    await wait_until(lambda: states() == [("failed", "not answered")])
    await bot.stop()
    assert not [line for line in log_lines() if "Traceback" in line or "never retrieved" in line]
