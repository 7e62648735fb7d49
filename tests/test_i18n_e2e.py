"""Languages end to end: the real bot against the fakes, with members and servers in other languages.
The member's language for what only they see (and their placeholder); the server's for what the
channel sees and for the moderation log; alt text on every image; no English left in a pseudo-locale
run, and nothing over Discord's limits in text 40 % longer than English."""

from __future__ import annotations

import re
from typing import Any

from bot.i18n import PSEUDO, t
from tests.fakes.discord import FakeDiscord
from tests.fakes.recorder import Recorded
from tests.fakes.wavespeed import Scenario
from tests.helpers import admin, answered, embeds_text

LOG_CHANNEL = 1310000000000000900
ENGLISH_PROGRESS = ("Queued", "Submitted", "Generating", "Imagining", "Imagined", "Options")


def buttons(body: dict[str, Any]) -> list[str]:
    data = body.get("data", body)
    return [b["label"] for row in data.get("components") or [] for b in row["components"]]


def alt_texts(request: Recorded) -> list[str]:
    data = request.json.get("data", request.json)
    return [a.get("description") for a in data.get("attachments") or []]


async def result(fake: FakeDiscord, payload: dict[str, Any]) -> Recorded:
    """The edit that turns the placeholder into the result (whatever its language)."""
    found = await fake.requests.wait_for(
        lambda r: r.method == "PATCH" and payload["token"] in r.path and bool(r.files),
    )
    return found[-1]


def edits_of(fake: FakeDiscord, payload: dict[str, Any]) -> list[Recorded]:
    return [r for r in fake.requests if payload["token"] in r.path and isinstance(r.json, dict)]


async def test_a_german_member_on_a_german_server_gets_german_progress_result_and_alt_text(start_bot):
    bot = await start_bot()
    payload = await bot.imagine(prompt="ein Leuchtturm", num_images=2, locale="de", guild_locale="de")

    placeholder = await answered(bot.discord, payload)
    final = await result(bot.discord, payload)

    assert "In der Warteschlange" in embeds_text(placeholder) and buttons(placeholder.json) == ["Abbrechen"]
    text = embeds_text(final)
    assert "✨ Erdacht" in text and "Optionen:" in text and "2 Bilder" in text and "Rechenzeit" in text
    assert buttons(final.json) == ["Neu würfeln", "Bearbeiten", "Details", "Löschen"]
    assert alt_texts(final) == ["Bild, erzeugt aus der Beschreibung: ein Leuchtturm"] * 2
    for sent in edits_of(bot.discord, payload):  # the placeholder, every progress edit, the result
        assert not any(word in embeds_text(sent) for word in ENGLISH_PROGRESS), embeds_text(sent)


async def test_the_placeholder_speaks_the_member_and_the_result_the_server(start_bot):
    bot = await start_bot()
    payload = await bot.imagine(prompt="a fox", locale="de", guild_locale="en-US")

    placeholder = await answered(bot.discord, payload)
    final = await result(bot.discord, payload)

    assert "In der Warteschlange" in embeds_text(placeholder)
    assert "✨ Imagined" in embeds_text(final) and buttons(final.json)[0] == "Re-roll"
    assert alt_texts(final) == ["Image generated from the prompt: a fox"]


async def test_a_japanese_members_refusal_is_japanese(start_bot, wavespeed):
    bot = await start_bot()
    payload = await bot.imagine(prompt="夜の海", safety_tolerance="5", locale="ja", guild_locale="en-US")

    refusal = await answered(bot.discord, payload)

    assert refusal.json["data"]["flags"] & 64  # private
    text = embeds_text(refusal)
    assert "`安全許容度` 5" in text and "上限 2" in text and "画像サービスには何も送信していません" in text
    assert not re.search(r"[A-Za-z]{3}", text), text
    assert wavespeed.submits() == []


async def test_the_moderation_log_follows_the_server_and_flagged_images_say_so(start_bot, wavespeed):
    wavespeed.scenario = Scenario(nsfw_flags=[True, False])
    bot = await start_bot()
    await admin(bot.discord, "log-channel", channel=("channel", LOG_CHANNEL))
    payload = await bot.imagine(prompt="deux renards", num_images=2, locale="ja", guild_locale="fr")

    final = await result(bot.discord, payload)
    [entry] = await bot.discord.requests.wait_for(
        lambda r: r.method == "POST" and r.path == f"/channels/{LOG_CHANNEL}/messages" and bool(r.files)
    )

    assert "🙈 1 image sur 2 a été signalée" in embeds_text(final)  # the channel: the server's French
    log = embeds_text(entry)
    assert "Image générée" in log and "Demandeur" in log and "(1 signalée(s))" in log
    flagged = "Signalée comme potentiellement sensible. Image générée à partir du prompt : deux renards"
    plain = "Image générée à partir du prompt : deux renards"
    assert alt_texts(final) == alt_texts(entry) == [flagged, plain]
    assert [f.filename.startswith("SPOILER_") for f in entry.files] == [True, False]


async def test_command_sync_carries_every_language(start_bot):
    bot = await start_bot()
    [imagine] = [c for c in bot.discord.commands[None] if c["name"] == "imagine"]

    assert imagine["description_localizations"]["de"].startswith("Bilder aus einer Beschreibung")
    assert set(imagine["description_localizations"]) == {"de", "fr", "es-ES", "pt-BR", "ja", "ru", "es-419"}
    assert imagine["name"] == "imagine" and imagine["name_localizations"]["de"] == "bild"
    assert imagine["name_localizations"]["ja"] == "画像生成" and imagine["name_localizations"]["ru"] == "нарисовать"
    prompt = next(o for o in imagine["options"] if o["name"] == "prompt")
    assert prompt["name_localizations"]["ja"] == "プロンプト" and prompt["description_localizations"]["ru"]
    ratio = next(o for o in imagine["options"] if o["name"] == "aspect_ratio")
    square = next(c for c in ratio["choices"] if c["value"] == "1:1")
    assert square["name_localizations"]["fr"] == "1:1 carré"
    [admin] = [c for c in bot.discord.commands[None] if c["name"] == "imagine-admin"]
    assert admin["description_localizations"]["pt-BR"] == "Configurações de moderação do /imaginar"
    assert admin["name_localizations"]["fr"] == "imaginer-admin"
    nsfw = next(o for o in admin["options"] if o["name"] == "nsfw")
    reset = next(o for o in admin["options"] if o["name"] == "reset")
    assert reset["name_localizations"]["de"] == "zurücksetzen"  # a subcommand's own name
    assert nsfw["description_localizations"]["ru"].startswith("Что делать с изображениями")
    policy = next(o for o in nsfw["options"] if o["name"] == "policy")
    assert policy["name_localizations"]["de"] == "regel"
    assert {c["value"]: c["name_localizations"]["ja"] for c in policy["choices"]}["spoiler"] == "ネタバレ防止"


# -- the pseudo-locale run: no literal escaped the catalogue, nothing overflows ------------------------------

PROMPT = "ŝţåŕŕý ñîĝĥţ öṽéŕ ţĥé šéå " * 60  # no ASCII letters, and long enough to be cut
# What may stay ASCII in the bot's text: code spans (values), Discord markup, links, slash commands,
# the model's name, and Discord's spoiler bars.
MARKUP = re.compile(r"`[^`]*`|<[^<>]*>|\]\([^()]*\)|/imagine[-a-z]*|FLUX\.1 Kontext \[pro\]|\|\|")
LIMITS = {"title": 256, "description": 4096, "name": 256, "value": 1024, "footer": 2048}


def escaped(text: str) -> list[str]:
    """English words (three ASCII letters in a row) left in text that should all be pseudo-locale."""
    return re.findall(r"[A-Za-z]{3,}", MARKUP.sub("", text))


def overflows(body: dict[str, Any]) -> list[str]:
    data = body.get("data", body)
    found = [] if len(data.get("content") or "") <= 2000 else ["content"]
    for embed in data.get("embeds") or []:
        parts = {"title": embed.get("title", ""), "description": embed.get("description", "")}
        parts["footer"] = (embed.get("footer") or {}).get("text", "")
        found += [k for k, v in parts.items() if len(v) > LIMITS[k]]
        for field in embed.get("fields", []):
            found += [k for k in ("name", "value") if len(field[k]) > LIMITS[k]]
        total = sum(map(len, parts.values())) + sum(len(f["name"]) + len(f["value"]) for f in embed.get("fields", []))
        found += ["embed total"] if total > 6000 else []
    found += [f"button {label!r}" for label in buttons(body) if len(label) > 80]
    found += [
        f"alt text {len(a)}"
        for a in (a.get("description") or "" for a in data.get("attachments") or [])
        if len(a) > 1024
    ]
    return found


def visible(body: dict[str, Any]) -> str:
    data = body.get("data", body)
    words = [embeds_text(body), *buttons(body), data.get("title", "")]
    words += [(e.get("footer") or {}).get("text", "") for e in data.get("embeds") or []]
    words += [a.get("description") or "" for a in data.get("attachments") or []]
    for row in data.get("components") or []:  # a modal's text inputs
        words += [c.get("label", "") + " " + c.get("placeholder", "") for c in row["components"] if c.get("type") == 4]
    return "\n".join(words)


async def test_a_pseudo_locale_run_leaves_no_english_and_overflows_nothing(start_bot, wavespeed):
    wavespeed.scenario = Scenario(nsfw_flags=[True, False])  # images 3 and 4 have no flag: flagged too
    bot = await start_bot()
    fake = bot.discord
    sent_before = len(fake.requests)
    pseudo = {"locale": PSEUDO, "guild_locale": PSEUDO}

    made = await bot.imagine(prompt=PROMPT, num_images=4, **pseudo)
    await result(fake, made)
    message = fake.original(made["token"])
    assert message is not None
    custom_ids = [b["custom_id"] for row in message["components"] for b in row["components"]]
    for custom_id in (c for c in custom_ids if not c.startswith("imagine:delete")):  # Re-roll, Edit, Details
        press = fake.component_interaction(custom_id, fake.messages[int(message["id"])], **pseudo)
        await fake.dispatch_interaction(press)
        await answered(fake, press)
    refused = await bot.imagine(prompt=PROMPT, safety_tolerance="5", **pseudo)
    await answered(fake, refused)
    usage = fake.interaction("usage", {}, member_permissions=0x20, **pseudo)  # Manage Server: spend too
    await fake.dispatch_interaction(usage)
    await answered(fake, usage)
    await fake.requests.wait_for(lambda r: r.method == "PATCH" and bool(r.files), count=2)  # the re-roll's result
    admin_answers = [
        await admin(fake, "show", locale=PSEUDO),
        await admin(fake, "block", term="a*", regex=True, locale=PSEUDO),  # refused: matches empty text
        await admin(fake, "nsfw", channel_kind="normal", policy="show", locale=PSEUDO),  # refused
        await admin(fake, "actions", who="requester", locale=PSEUDO),
    ]

    bodies = [
        r.json
        for r in list(fake.requests)[sent_before:]
        if r.method in ("POST", "PATCH") and isinstance(r.json, dict) and "/commands" not in r.path
    ]
    texts = [visible(body) for body in bodies]
    assert "Ṁöđéŕåţîöñ šéţţîñĝš" in admin_answers[0] and all(answer.strip() for answer in admin_answers)
    # The placeholders and results, the Edit dialog, Details, the refusal and /usage all went through.
    assert len(bodies) >= 10 and any("Ŵĥåţ šĥöûļđ çĥåñĝé?" in text for text in texts)
    assert [(text, escaped(text)) for text in texts if escaped(text)] == []
    assert [problem for body in bodies for problem in overflows(body)] == []


async def test_after_a_restart_the_job_keeps_its_languages(start_bot, wavespeed):
    wavespeed.scenario = Scenario(inference_seconds=3.0)
    first = await start_bot(shutdown_grace_seconds=0.2)
    payload = await first.imagine(prompt="ein langsamer Fuchs", locale="de", guild_locale="fr")
    await wavespeed.requests.wait_for(lambda r: r.path.endswith("/result"))
    await first.stop()
    paused = [r for r in edits_of(first.discord, payload) if "⏸" in embeds_text(r)]

    await start_bot()  # a new process knows nothing but the database
    final = await result(first.discord, payload)

    assert paused and "⏸ Pausiert" in embeds_text(paused[-1])  # the member's language
    assert "✨ Imaginé" in embeds_text(final) and alt_texts(final)[0].startswith("Image générée")  # the server's


async def test_a_changed_translation_resyncs_the_commands_and_an_unchanged_one_does_not(start_bot, monkeypatch):
    def syncs() -> int:
        return len([r for r in first.discord.requests if r.method == "PUT" and r.path.endswith("/commands")])

    first = await start_bot()
    await first.stop()
    await (await start_bot()).stop()
    assert syncs() == 1  # nothing changed: the restart did not sync

    monkeypatch.setattr("bot.i18n.commands.t", lambda locale, key: t(locale, key) + ("!" if locale == "de" else ""))
    await start_bot()

    assert syncs() == 2
    [imagine] = [c for c in first.discord.commands[None] if c["name"] == "imagine"]
    assert imagine["description_localizations"]["de"].endswith("!")


async def test_a_japanese_member_cancels_in_japanese_and_a_stranger_is_refused_in_theirs(start_bot, wavespeed):
    wavespeed.scenario_by_prompt = {"long": Scenario(inference_seconds=2.0)}
    bot = await start_bot(max_concurrent_jobs=1)
    fake = bot.discord
    first = await bot.imagine(prompt="long")
    waiting = await bot.imagine(prompt="待っている", locale="ja", guild_locale="en-US")
    await answered(fake, waiting)
    message = fake.original(waiting["token"])
    assert message is not None
    [cancel] = [b["custom_id"] for row in message["components"] for b in row["components"]]

    stranger = fake.component_interaction(cancel, message, user_id=1310000000000000299, locale="ru")
    await fake.dispatch_interaction(stranger)
    own = fake.component_interaction(cancel, message, locale="ja")
    await fake.dispatch_interaction(own)

    assert "Отменить этот запрос может только" in embeds_text(await answered(fake, stranger))
    cancelled = embeds_text(await answered(fake, own))
    assert "キャンセル済み" in cancelled and "開始前にあなたがキャンセルしました" in cancelled
    await result(fake, first)


async def test_a_failure_is_explained_in_the_members_language(start_bot, wavespeed):
    wavespeed.scenario = Scenario(final_status="failed", error_code=1200)  # WaveSpeed's safety checker
    bot = await start_bot()
    payload = await bot.imagine(prompt="ein verbotener Fuchs", locale="de", guild_locale="fr")

    [failure] = await bot.discord.requests.wait_for(
        lambda r: r.method == "PATCH" and payload["token"] in r.path and "Was passiert ist" in embeds_text(r)
    )

    text = embeds_text(failure)
    assert "Dein Bild konnte nicht erstellt werden" in text and "Sicherheitsfilter des Bilddienstes" in text
    assert "Vorhersage" in text  # the prediction id, named in German
