"""Result actions end to end: Re-roll, Edit (modal and /imagine-edit), Details and who may press them,
after a restart, on a pruned job, and under the same limits and moderation as /imagine."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from tests import dbread
from tests.fakes.discord import FakeDiscord
from tests.fakes.recorder import Recorded
from tests.fakes.wavespeed import EDIT, TEXT_TO_IMAGE, Scenario
from tests.helpers import admin, answered, embeds_text

if TYPE_CHECKING:
    from tests.conftest import RunningBot

REQUESTER, OTHER = 1310000000000000201, 1310000000000000202


async def result(bot: RunningBot, prompt: str = "a lighthouse", **options: Any) -> dict[str, Any]:
    """Make an image; returns the result message as the fake stores it."""
    payload = await bot.imagine(prompt=prompt, user_id=REQUESTER, **options)
    await bot.final_edit(payload)
    message = bot.discord.original(payload["token"])
    assert message is not None
    return message


async def press(fake: FakeDiscord, message: dict[str, Any], label: str, user: int = REQUESTER) -> dict[str, Any]:
    [row] = message["components"]
    [button] = [b for b in row["components"] if b["label"] == label]
    click = fake.component_interaction(button["custom_id"], fake.messages[int(message["id"])], user_id=user)
    await fake.dispatch_interaction(click)
    return click


async def reply_to(fake: FakeDiscord, message: dict[str, Any], *, count: int = 1) -> list[Recorded]:
    """The placeholders the bot posted as replies to `message`."""
    return await fake.requests.wait_for(
        lambda r: (
            r.method == "POST"
            and r.path == f"/channels/{message['channel_id']}/messages"
            and str((r.json or {}).get("message_reference", {}).get("message_id")) == message["id"]
        ),
        count=count,
    )


def posted(fake: FakeDiscord, post: Recorded) -> dict[str, Any]:
    """The message a channel POST created (found by its nonce)."""
    channel = int(post.path.split("/")[2])
    [created] = [m for m in fake.channel_messages(channel) if m.get("nonce") == post.json["nonce"]]
    return created


async def delivered_reply(fake: FakeDiscord, post: Recorded, *, timeout: float = 20) -> dict[str, Any]:
    """The reply placeholder once it has become a result (edited in place with the images)."""
    created = posted(fake, post)
    await fake.requests.wait_for(
        lambda r: r.method == "PATCH" and r.path.endswith(f"/messages/{created['id']}") and bool(r.files),
        timeout=timeout,
    )
    return fake.messages[int(created["id"])]


async def test_reroll_by_the_requester_and_another_member_replies_with_a_new_seed(start_bot, wavespeed):
    bot = await start_bot()
    fake: FakeDiscord = bot.discord
    original = await result(bot, seed=42, aspect_ratio="16:9")

    click = await press(fake, original, "Re-roll")
    assert (await answered(fake, click)).json["type"] == 6  # acknowledged; the reply is the answer
    [post] = await reply_to(fake, original)
    assert post.json["allowed_mentions"] == {"parse": []} and "Queued" in embeds_text(post)
    rerolled = await delivered_reply(fake, post)
    assert rerolled["attachments"] and rerolled["embeds"][0]["title"] == "✨ Imagined"
    first, second = wavespeed.accepted_submits()
    assert {k: v for k, v in second.json.items() if k != "seed"} == {k: v for k, v in first.json.items() if k != "seed"}
    assert second.json["seed"] != 42 and second.json["aspect_ratio"] == "16:9"

    other = await press(fake, original, "Re-roll", user=OTHER)  # open to everyone by default
    await answered(fake, other)
    await reply_to(fake, original, count=2)


async def test_requester_only_setting_refuses_other_members(start_bot, wavespeed):
    bot = await start_bot()
    fake: FakeDiscord = bot.discord
    assert "✅" in await admin(fake, "actions", who="requester")
    original = await result(bot)

    for label in ("Re-roll", "Edit", "Remix"):
        refusal = await answered(fake, await press(fake, original, label, user=OTHER))
        assert refusal.json["data"]["flags"] & 64 and "only the member who asked" in embeds_text(refusal)
    details = await answered(fake, await press(fake, original, "Details", user=OTHER))
    assert "**Seed**" in embeds_text(details)  # details stay open to everyone
    assert len(wavespeed.submits()) == 1


async def test_edit_sends_the_chosen_image_and_the_instruction_to_the_edit_endpoint(start_bot, wavespeed):
    bot = await start_bot()
    fake: FakeDiscord = bot.discord
    original = await result(bot, num_images=2, aspect_ratio="3:4", safety_tolerance="1")

    click = await press(fake, original, "Edit")
    assert (await answered(fake, click)).json["type"] == 9
    modal = fake.modals[-1]
    fields = [row["components"][0] for row in modal["components"]]
    instruction, which = fields[0]["custom_id"], fields[1]["custom_id"]
    submit = fake.modal_submit(
        modal["custom_id"], {instruction: "make it night time", which: "2"}, message=original, user_id=REQUESTER
    )
    await fake.dispatch_interaction(submit)
    [post] = await reply_to(fake, original)
    edited = await delivered_reply(fake, post)

    edit = wavespeed.accepted_submits()[-1]
    assert edit.path == f"/api/v3/{EDIT}" and edit.json["prompt"] == "make it night time"
    assert edit.json["image"] == original["attachments"][1]["url"]  # the second image, as asked
    assert edit.json["aspect_ratio"] == "3:4" and edit.json["safety_tolerance"] == "1"
    assert "num_images" not in edit.json and len(edited["attachments"]) == 1


async def test_details_are_private_and_complete(start_bot, wavespeed):
    bot = await start_bot()
    original = await result(bot, prompt="a fox in the snow", seed=777, guidance_scale=5.5)
    details = await answered(bot.discord, await press(bot.discord, original, "Details"))
    text = embeds_text(details)
    [prediction_id] = wavespeed.predictions
    assert details.json["data"]["flags"] & 64
    assert "```\na fox in the snow\n```" in text and "**Seed** `777`" in text and "**Guidance scale** `5.5`" in text
    assert f"**Prediction** `{prediction_id}`" in text and "**Inference**" in text


async def test_buttons_work_after_a_restart_and_say_so_when_the_job_was_pruned(start_bot, wavespeed, database_url):
    bot = await start_bot()
    original = await result(bot)
    old = await result(bot, prompt="an old one")
    await bot.stop()
    for job_id, params in dbread.rows(database_url, "SELECT id, params FROM jobs"):
        if json.loads(params)["prompt"] == "an old one":  # what retention does to a job past JOB_RETENTION_DAYS
            dbread.execute(database_url, "DELETE FROM jobs WHERE id = ?", job_id)

    bot = await start_bot()
    fake: FakeDiscord = bot.discord
    await answered(fake, await press(fake, original, "Re-roll"))
    await reply_to(fake, original)
    for label in ("Re-roll", "Details"):
        gone = await answered(fake, await press(fake, old, label))
        assert gone.json["data"]["flags"] & 64 and "too old" in embeds_text(gone)
    await wavespeed.requests.wait_for(lambda r: r.method == "POST", count=3)
    assert [r.json["prompt"] for r in wavespeed.submits()] == ["a lighthouse", "an old one", "a lighthouse"]


async def test_actions_respect_limits_and_blocked_terms(start_bot, wavespeed):
    bot = await start_bot(user_window_images=2)
    fake: FakeDiscord = bot.discord
    original = await result(bot, num_images=2)
    refusal = await answered(fake, await press(fake, original, "Re-roll"))
    assert refusal.json["data"]["flags"] & 64 and "in the last hour" in embeds_text(refusal)

    assert "✅" in await admin(fake, "block", term="gore")
    await answered(fake, await press(fake, original, "Edit", user=OTHER))
    modal = fake.modals[-1]
    fields = [row["components"][0]["custom_id"] for row in modal["components"]]
    submit = fake.modal_submit(
        modal["custom_id"], {fields[0]: "add GORE", fields[1]: "1"}, message=original, user_id=OTHER
    )
    await fake.dispatch_interaction(submit)
    refused = await answered(fake, submit)
    assert refused.json["data"]["flags"] & 64 and "doesn't allow" in embeds_text(refused)
    assert len(wavespeed.submits()) == 1


def attach(payload: dict[str, Any], ident: str, filename: str, content_type: str, url: str) -> None:
    """Give an /imagine-edit payload its `image` option, resolved as Discord sends attachments."""
    payload["data"]["options"].append({"name": "image", "type": 11, "value": ident})
    attachment = {"id": ident, "filename": filename, "size": 1234, "url": url, "proxy_url": url}
    payload["data"]["resolved"] = {"attachments": {ident: {**attachment, "content_type": content_type}}}


async def test_imagine_edit_command_edits_an_attached_image(start_bot, wavespeed):
    bot = await start_bot()
    fake: FakeDiscord = bot.discord
    url = f"{fake.base_url}/attachments/1/2/cat.png"
    payload = fake.interaction("imagine-edit", {"prompt": "give the cat a hat"}, user_id=REQUESTER)
    attach(payload, "900", "cat.png", "image/png", url)
    await fake.dispatch_interaction(payload)
    final = await bot.final_edit(payload)

    [edit] = wavespeed.accepted_submits()
    assert edit.path == f"/api/v3/{EDIT}" and edit.json["image"] == url and edit.json["prompt"] == "give the cat a hat"
    assert final.files and TEXT_TO_IMAGE not in edit.path

    text_file = fake.interaction("imagine-edit", {"prompt": "x"}, user_id=REQUESTER)
    attach(text_file, "901", "a.txt", "text/plain", url)
    await fake.dispatch_interaction(text_file)
    refused = await answered(fake, text_file)
    assert refused.json["data"]["flags"] & 64 and "must be a PNG, JPEG or WebP" in embeds_text(refused)
    assert len(wavespeed.submits()) == 1


async def test_an_edit_whose_source_expired_says_so(start_bot, wavespeed):
    wavespeed.scenario = Scenario()
    bot = await start_bot()
    fake: FakeDiscord = bot.discord
    original = await result(bot)
    wavespeed.scenario = Scenario(final_status="failed", error="failed to download image", error_code=1402)
    await answered(fake, await press(fake, original, "Edit"))
    modal = fake.modals[-1]
    [field] = [row["components"][0]["custom_id"] for row in modal["components"]]
    await fake.dispatch_interaction(fake.modal_submit(modal["custom_id"], {field: "brighter"}, message=original))
    [post] = await reply_to(fake, original)
    created = posted(fake, post)
    await fake.requests.wait_for(
        lambda r: r.method == "PATCH" and r.path.endswith(f"/messages/{created['id']}") and "expired" in embeds_text(r)
    )
    assert fake.messages[int(created["id"])]["embeds"][0]["title"] == "Couldn't make your image"


def remix_fields(modal: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The Remix dialog's text inputs by their English label's first word: prompt, aspect, seed."""
    inputs = [row["components"][0] for row in modal["components"]]
    return {field["label"].split()[0].lower(): field for field in inputs}


async def test_remix_opens_the_prompt_prefilled_and_runs_the_changed_text_as_a_new_job(
    start_bot, wavespeed, database_url
):
    bot = await start_bot()
    fake: FakeDiscord = bot.discord
    original = await result(bot, prompt="a lighthouse at noon", seed=42, num_images=2, guidance_scale=5.0)

    click = await press(fake, original, "Remix", user=OTHER)
    assert (await answered(fake, click)).json["type"] == 9
    modal = fake.modals[-1]
    fields = remix_fields(modal)
    assert fields["prompt"]["value"] == "a lighthouse at noon"
    assert fields["aspect"]["value"] == "1:1" and fields["seed"]["value"] == "42"
    assert str(click["id"]) in modal["custom_id"]  # the presser's own dialog
    values = {fields["prompt"]["custom_id"]: "a lighthouse at dusk", fields["aspect"]["custom_id"]: "16:9"}
    values[fields["seed"]["custom_id"]] = "42"
    submit = fake.modal_submit(modal["custom_id"], values, message=original, user_id=OTHER)
    await fake.dispatch_interaction(submit)
    [post] = await reply_to(fake, original)
    remixed = await delivered_reply(fake, post)

    first, second = wavespeed.accepted_submits()
    assert second.path == f"/api/v3/{TEXT_TO_IMAGE}"
    assert second.json == {**first.json, "prompt": "a lighthouse at dusk", "aspect_ratio": "16:9"}
    assert len(remixed["attachments"]) == 2
    rows = dbread.rows(database_url, "SELECT kind, source_job_id, user_id, id FROM jobs ORDER BY id")
    assert rows[1][0] == "remix" and rows[1][1] is not None and rows[1][2] == OTHER  # counted to the presser
    details = embeds_text(await answered(fake, await press(fake, remixed, "Details")))
    assert f"**Remixed from job** `{rows[0][3]}`" in details


async def test_remix_refuses_a_bad_seed_or_aspect_ratio_and_sends_nothing(start_bot, wavespeed):
    bot = await start_bot()
    fake: FakeDiscord = bot.discord
    original = await result(bot)
    for field, value, says in (("seed", "12ab", "`seed`"), ("aspect", "5:4", "`aspect_ratio`")):
        await answered(fake, await press(fake, original, "Remix"))
        modal = fake.modals[-1]
        fields = remix_fields(modal)
        submit = fake.modal_submit(
            modal["custom_id"],
            {f["custom_id"]: (value if name == field else f["value"]) for name, f in fields.items()},
            message=original,
        )
        await fake.dispatch_interaction(submit)
        refused = await answered(fake, submit)
        assert refused.json["data"]["flags"] & 64 and says in embeds_text(refused)
        assert "Nothing was sent" in embeds_text(refused)
    assert len(wavespeed.submits()) == 1
