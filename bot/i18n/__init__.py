"""Every word the bot shows a person, in the person's language: `t(locale, "key", **values)`.

The catalogue is gettext: one `.po` file per locale in `bot/i18n/locales/`, keyed by message ids
such as `progress.queued` (the English text lives in `en-US.po` like any other language). The files
are compiled in memory at import (Babel's `.po` reader and `.mo` writer, read back by the standard
library's `gettext`), so there is no build step and nothing compiled to ship or forget. Plural forms
come from each file's `Plural-Forms` header (`ngettext`), numbers, money and dates are formatted
for the locale by Babel, and placeholders are `str.format` fields: `{count}`, `{limit}`. (Times
shown to members are Discord timestamps, `<t:…:R>`, which each client writes in its own language.)

A locale is what Discord sends (`interaction.locale`, `guild_locale`): `de`, `pt-BR`, `en-GB`... A
locale without a catalogue of its own falls back to its language's (`es-419` reads `es-ES`), then to
`en-US`. `x-pseudo` is a test locale derived from English: accented and 40 % longer.
"""

from __future__ import annotations

import gettext
import io
import string
from datetime import datetime
from decimal import Decimal
from functools import cache, lru_cache
from pathlib import Path

from babel import dates, numbers
from babel.messages import mofile, pofile

from bot.i18n.pseudo import Pseudo

DEFAULT = "en-US"
PSEUDO = "x-pseudo"
LOCALES: tuple[str, ...] = ("en-US", "de", "fr", "es-ES", "pt-BR", "ja", "ru")
DIRECTORY = Path(__file__).parent / "locales"
# Babel's name for each catalogue's locale (number and date formats).
_BABEL = {"en-US": "en_US", "es-ES": "es_ES", "pt-BR": "pt_BR", PSEUDO: "en_US"}


class Money(Decimal):
    """An amount in US dollars (what WaveSpeed bills): formatted as the locale writes money."""


def resolve(locale: object) -> str:
    """The catalogue for a Discord locale (a `discord.Locale`, its value, or None)."""
    code = str(getattr(locale, "value", locale) or DEFAULT)
    if code in LOCALES or code == PSEUDO:
        return code
    language = code.split("-")[0].lower()
    return next((known for known in LOCALES if known.split("-")[0] == language), DEFAULT)


def read_catalogue(locale: str) -> gettext.GNUTranslations:
    """One `.po` file compiled in memory (Babel writes the `.mo`, `gettext` reads it)."""
    with (DIRECTORY / f"{locale}.po").open("rb") as source:
        catalog = pofile.read_po(source, locale=_BABEL.get(locale, locale).replace("-", "_"))
    compiled = io.BytesIO()
    mofile.write_mo(compiled, catalog, use_fuzzy=False)
    compiled.seek(0)
    return gettext.GNUTranslations(compiled)


@cache
def _translations(locale: str) -> gettext.NullTranslations:
    if locale == PSEUDO:
        return Pseudo(_translations(DEFAULT))
    translations = read_catalogue(locale)
    if locale != DEFAULT:
        translations.add_fallback(_translations(DEFAULT))
    return translations


def t(locale: object, key: str, /, **values: object) -> str:
    """The text of `key` in `locale`, its fields filled with `values` formatted for the locale.
    A `count` value chooses the plural form when the entry has them."""
    code = resolve(locale)
    count = values.get("count")
    if isinstance(count, int) and key in plural_keys():
        text = _translations(code).ngettext(key, key, count)
    else:
        text = _text(code, key)
    if not values:
        return text
    return text.format(**{name: _format(code, value) for name, value in values.items()})


@lru_cache(maxsize=8192)
def _text(locale: str, key: str) -> str:
    """One entry, looked up once: a delivery reads some forty (labels, embed fields, alt text)."""
    return _translations(locale).gettext(key)


def _format(locale: str, value: object) -> object:
    where = _BABEL.get(locale, locale)
    if isinstance(value, bool):
        return value
    if isinstance(value, Money):
        return numbers.format_currency(value, "USD", locale=where)
    if isinstance(value, int):
        return _number(value, None, where)
    if isinstance(value, float):
        return _number(value, "#,##0.###", where)
    if isinstance(value, datetime):
        return dates.format_datetime(value, format="medium", locale=where)
    return value


@lru_cache(maxsize=4096)
def _number(value: float, pattern: str | None, where: str) -> str:
    """Babel's formatting, remembered: a placeholder formats the same few counts and guidance values
    over and over, and Babel's pattern machinery showed in a profile of a burst of commands."""
    return str(numbers.format_decimal(value, format=pattern, locale=where))


def decimal(locale: object, value: float, digits: int = 1) -> str:
    """A measurement with a fixed number of decimals (`12.3` in English, `12,3` in German)."""
    pattern = "#,##0." + "0" * digits if digits else "#,##0"
    return numbers.format_decimal(value, format=pattern, locale=_BABEL.get(resolve(locale), resolve(locale)))


@cache
def plural_keys() -> frozenset[str]:
    """The entries with plural forms (chosen by their `count`)."""
    with (DIRECTORY / f"{DEFAULT}.po").open("rb") as source:
        return frozenset(str(m.id[0]) for m in pofile.read_po(source) if m.pluralizable)


def fields(text: str) -> set[str]:
    """The placeholders a message uses (for the tests that compare catalogues)."""
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def has(key: str) -> bool:
    return key in _key_set()


@cache
def _key_set() -> frozenset[str]:
    return frozenset(known_keys())


def known_keys() -> list[str]:
    """Every message id, from the English catalogue (the reference for the others)."""
    with (DIRECTORY / f"{DEFAULT}.po").open("rb") as source:
        return [str(m.id[0] if isinstance(m.id, tuple) else m.id) for m in pofile.read_po(source) if m.id]
