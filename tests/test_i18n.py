"""The catalogue itself: every entry in every language with the same placeholders and plural forms,
texts that fit Discord's limits in every language (and in the 40 % longer pseudo-locale), command
texts Discord accepts, and numbers and money written as each language writes them."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from babel.messages import pofile

from bot import i18n
from bot.i18n import DEFAULT, LOCALES, PSEUDO, Money, fields, resolve, t
from bot.i18n.commands import DISCORD_LOCALES

Entries = dict[str, tuple[str, ...]]  # key -> its forms (one for a plain entry)
# Discord: a command or option name is 1-32 lowercase letters, digits, '-' or '_' (any script).
NAME = re.compile(r"^[-_\w]{1,32}$")


def entries(locale: str) -> tuple[Entries, int]:
    with (i18n.DIRECTORY / f"{locale}.po").open("rb") as source:
        catalog = pofile.read_po(source)
    found: Entries = {}
    for message in catalog:
        if not message.id:
            continue
        key = message.id[0] if isinstance(message.id, tuple) else message.id
        forms = message.string if isinstance(message.string, tuple) else (message.string,)
        found[str(key)] = tuple(str(f) for f in forms)
    return found, catalog.num_plurals


def problems(reference: Entries, other: Entries, plurals: int) -> list[str]:
    """What is wrong with `other` against the English `reference`: missing, empty or extra entries,
    a plain entry turned plural or back, the wrong number of plural forms, a placeholder that is
    not English's (a plural form may leave out the number, as English 'hour' does)."""
    found = []
    for key, english in reference.items():
        forms = other.get(key)
        if forms is None or not all(forms):
            found.append(f"{key}: missing")
            continue
        expected = fields(" ".join(english))
        if len(english) == 1:
            if len(forms) != 1:
                found.append(f"{key}: plural forms for a plain entry")
            elif fields(forms[0]) != expected:
                found.append(f"{key}: placeholders {sorted(fields(forms[0]))}, English has {sorted(expected)}")
            continue
        if len(forms) != plurals:
            found.append(f"{key}: {len(forms)} plural forms, the language has {plurals}")
        used = set().union(*(fields(f) for f in forms))
        if used != expected and used != expected - {"count"}:
            found.append(f"{key}: placeholders {sorted(used)}, English has {sorted(expected)}")
    found += [f"{key}: not in English" for key in other.keys() - reference.keys()]
    return found


@pytest.mark.parametrize("locale", LOCALES)
def test_every_entry_exists_in_every_locale_with_the_same_placeholders(locale):
    reference, _ = entries(DEFAULT)
    other, plurals = entries(locale)
    assert problems(reference, other, plurals) == []


def test_the_check_finds_a_missing_entry_and_a_mismatched_placeholder():
    reference, _ = entries(DEFAULT)
    broken, plurals = entries("de")
    del broken["cancel.gone"]
    broken["refused.guild_daily"] = ("Dieser Server hat heute {used} Bilder verbraucht.",)
    broken["options.line"] = broken["options.line"][:1]
    assert problems(reference, broken, plurals) == [
        "options.line: 1 plural forms, the language has 2",
        "refused.guild_daily: placeholders ['used'], English has ['allowed', 'used', 'when']",
        "cancel.gone: missing",
    ]


@pytest.mark.parametrize("locale", [*LOCALES, PSEUDO])
def test_command_texts_are_what_discord_accepts(locale):
    for key in i18n.known_keys():
        text = t(locale, key)
        if key.startswith("command.") and key.endswith(".name"):
            if locale == PSEUDO:
                continue  # Discord never syncs the test locale, and its padding is not a name
            assert NAME.match(text) and text == text.lower(), (locale, key, text)
        elif key.startswith(("command.", "choice.")):  # descriptions and choice names
            assert 1 <= len(text) <= 100, (locale, key, len(text))


@pytest.mark.parametrize("locale", [*LOCALES, PSEUDO])
def test_labels_fit_discord_in_every_language(locale):
    for action in ("reroll", "edit", "details", "delete", "cancel"):
        assert len(t(locale, f"button.{action}")) <= 80
    assert len(t(locale, "modal.title")) <= 45
    assert len(t(locale, "modal.instruction")) <= 45 and len(t(locale, "modal.which", count=4)) <= 45
    assert len(t(locale, "modal.placeholder")) <= 100


def test_the_pseudo_locale_is_longer_and_accented_with_its_markup_intact():
    english = t(DEFAULT, "progress.slowed", when="<t:1:R>")
    pseudo = t(PSEUDO, "progress.slowed", when="<t:1:R>")
    assert len(pseudo) >= 1.4 * len(english) - 1
    assert "<t:1:R>" in pseudo and "**" in pseudo and not re.search(r"[A-Za-z]{3}", pseudo.replace("<t:1:R>", ""))


def test_discord_locales_find_their_catalogue():
    assert resolve("es-419") == "es-ES" and resolve("en-GB") == DEFAULT and resolve("pt-BR") == "pt-BR"
    assert resolve("ko") == DEFAULT and resolve(None) == DEFAULT
    assert {resolve(locale) for locale in DISCORD_LOCALES.values()} == set(LOCALES)


def test_plurals_numbers_and_money_follow_the_language():
    assert t("ru", "usage.spend_today", count=1, spend=Money("0.04")) == "**Сегодня:** 1 изображение · 0,04\xa0$"
    assert "3 изображения" in t("ru", "usage.spend_today", count=3, spend=Money("0.12"))
    assert "11 изображений" in t("ru", "usage.spend_today", count=11, spend=Money("0.44"))
    assert (
        t("de", "usage.spend_30", count=1200, spend=Money("48.00")) == "**Letzte 30 Tage:** 1.200 Bilder · 48,00\xa0$"
    )
    assert t(DEFAULT, "usage.spend_30", count=1200, spend=Money("48.00")) == "**Last 30 days:** 1,200 images · $48.00"
    assert t("fr", "flags.which", count=1, total=3) == "1 image sur 3 a été"  # French: 0 and 1 are singular
    assert "`3,5`" in t("de", "options.line", ratio="1:1", count=1, seed="7", guidance=3.5, safety="2")
    when = datetime(2026, 3, 1, 14, 5, tzinfo=UTC)  # a date value is written as the language writes dates
    assert t("de", "progress.started", stage="x", when=when) == "x · gestartet 01.03.2026, 14:05:00"


def test_the_low_balance_warning_is_written_in_the_servers_language():
    from bot.ops.balance import Reading, warning_embed

    embed = warning_embed(Reading(3.25, 0.0, True), threshold=10, price=0.04, locale="de")
    assert embed.title == "WaveSpeed-Guthaben ist niedrig"
    assert "**3,25\xa0$** (etwa 81 Bilder zu je 0,04\xa0$)" in str(embed.description)
