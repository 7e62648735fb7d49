"""Several references end to end: /imagine-edit with up to four attached images, and Edit on several
images of a result, reach FLUX.1 Kontext multi with the images in the order given; bad attachments
are refused, naming the option, before anything is sent."""

from __future__ import annotations

from typing import Any

from tests.fakes.discord import FakeDiscord
from tests.fakes.wavespeed import EDIT, MULTI
from tests.helpers import answered, embeds_text
from tests.test_actions_e2e import REQUESTER, delivered_reply, press, reply_to, result

MIB = 1024 * 1024


def with_images(fake: FakeDiscord, prompt: str, *images: tuple[str, str, int]) -> dict[str, Any]:
    """An /imagine-edit payload with `images` (filename, content type, size) as image, image2, ..."""
    payload = fake.interaction("imagine-edit", {"prompt": prompt}, user_id=REQUESTER)
    resolved: dict[str, Any] = {}
    for n, (filename, content_type, size) in enumerate(images):
        ident, url = str(900 + n), f"{fake.base_url}/attachments/1/{900 + n}/{filename}"
        option = "image" if n == 0 else f"image{n + 1}"
        payload["data"]["options"].append({"name": option, "type": 11, "value": ident})
        resolved[ident] = {
            "id": ident, "filename": filename, "size": size, "url": url, "proxy_url": url, "content_type": content_type,
        }  # fmt: skip
    payload["data"]["resolved"] = {"attachments": resolved}
    return payload


async def test_three_attached_images_reach_the_multi_endpoint_in_order(start_bot, wavespeed):
    bot = await start_bot()
    fake: FakeDiscord = bot.discord
    payload = with_images(
        fake, "put the cat from image 1 on the sofa from image 2 under the lamp from image 3",
        ("cat.png", "image/png", MIB), ("sofa.jpg", "image/jpeg", 2 * MIB), ("lamp.webp", "image/webp", 3 * MIB),
    )  # fmt: skip
    await fake.dispatch_interaction(payload)
    final = await bot.final_edit(payload)

    [submit] = wavespeed.accepted_submits()
    assert submit.path == f"/api/v3/{MULTI}" and "image" not in submit.json and "num_images" not in submit.json
    assert submit.json["images"] == [
        f"{fake.base_url}/attachments/1/900/cat.png",
        f"{fake.base_url}/attachments/1/901/sofa.jpg",
        f"{fake.base_url}/attachments/1/902/lamp.webp",
    ]
    assert submit.json["prompt"].startswith("put the cat") and len(final.files) == 1


async def test_bad_attachments_are_refused_by_name_and_nothing_is_sent(start_bot, wavespeed):
    bot = await start_bot()
    fake: FakeDiscord = bot.discord
    cases: list[tuple[list[tuple[str, str, int]], str]] = [
        ([("a.png", "image/png", MIB), ("notes.txt", "text/plain", 100)], "`image2`"),
        ([("a.png", "image/png", MIB), ("b.png", "image/png", MIB), ("huge.png", "image/png", 25 * MIB)], "`image3`"),
        ([("a.gif", "image/gif", MIB)], "`image`"),
    ]
    for images, named in cases:
        payload = with_images(fake, "combine them", *images)
        await fake.dispatch_interaction(payload)
        refused = await answered(fake, payload)
        text = embeds_text(refused)
        assert refused.json["data"]["flags"] & 64 and named in text and "PNG, JPEG or WebP image up to 20 MB" in text
        assert "Nothing was sent" in text
    assert wavespeed.submits() == []


async def test_edit_on_several_images_of_a_result_sends_them_together(start_bot, wavespeed):
    bot = await start_bot()
    fake: FakeDiscord = bot.discord
    original = await result(bot, num_images=3)

    async def edit_with(which: str) -> dict[str, Any]:
        await answered(fake, await press(fake, original, "Edit"))
        modal = fake.modals[-1]
        instruction, choice = (row["components"][0]["custom_id"] for row in modal["components"])
        submit = fake.modal_submit(
            modal["custom_id"], {instruction: "the dog from image 3 next to image 1", choice: which}, message=original
        )
        await fake.dispatch_interaction(submit)
        return submit

    refused = await answered(fake, await edit_with("1,7"))
    assert refused.json["data"]["flags"] & 64 and "from 1 to 3, separated by commas" in embeds_text(refused)
    await edit_with("3, 1")  # spaces are fine
    [post] = await reply_to(fake, original)
    await delivered_reply(fake, post)

    submits = wavespeed.accepted_submits()
    assert len(submits) == 2 and submits[1].path == f"/api/v3/{MULTI}"
    urls = [a["url"] for a in original["attachments"]]
    assert submits[1].json["images"] == [urls[2], urls[0]]  # in the order typed
    assert EDIT not in {s.path.removeprefix("/api/v3/") for s in submits}
