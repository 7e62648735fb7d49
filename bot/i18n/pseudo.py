"""A pseudo-locale for tests: every English message accented and 40 % longer, its placeholders,
markdown and Discord markup intact. Any unaccented English word in what the bot sends then is a
literal that escaped the catalogue, and any text that overflows a Discord limit in a longer
language shows up in English tests too."""

from __future__ import annotations

import gettext
import math
import re

ACCENTED = str.maketrans(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "åƀçđéƒĝĥîĵķļɱñöþǫŕšţûṽŵẋýžÅƁÇĐÉƑĜĤÎĴĶĻṀÑÖÞǪŔŠŢÛṼŴẊÝŽ",
)
# Left as they are: placeholders, code spans, Discord markup (<t:..>, <#..>, <@..>), links, slash commands.
_KEEP = re.compile(r"\{[^{}]*\}|`[^`]*`|<[^<>]*>|\]\([^()]*\)|/imagine[-a-z]*|FLUX\.1 Kontext \[pro\]")
EXPANSION = 1.4


def pseudo(text: str) -> str:
    parts, last = [], 0
    for match in _KEEP.finditer(text):
        parts += [text[last : match.start()].translate(ACCENTED), match.group()]
        last = match.end()
    parts.append(text[last:].translate(ACCENTED))
    padding = math.ceil(len(text) * (EXPANSION - 1))
    return "".join(parts) + (" " + "·" * (padding - 1) if padding > 1 else "")


class Pseudo(gettext.NullTranslations):
    def __init__(self, english: gettext.NullTranslations) -> None:
        super().__init__()
        self._english = english

    def gettext(self, message: str) -> str:
        return pseudo(self._english.gettext(message))

    def ngettext(self, msgid1: str, msgid2: str, n: int) -> str:
        return pseudo(self._english.ngettext(msgid1, msgid2, n))
