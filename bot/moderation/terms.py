"""Blocked terms: a server's list of words, phrases or regular expressions that a prompt must not contain.

A prompt is checked before any paid API call. Both the prompt and plain terms go through `normalize`:

1. NFKD (NFKC then NFD): fullwidth letters, ligatures and styled letters become plain ones and accents come apart.
2. Combining and enclosing marks (Mn, Me) and format characters (Cf: zero-width space/joiner, soft hyphen, BOM)
   are dropped, so "pörn" and "p<zero-width space>orn" both read "porn". Invisible "letters" (Hangul fillers,
   braille blank) become spaces.
3. Latin look-alikes from Cyrillic, Greek and a few Latin extensions (ı ł ø đ) are mapped to the letter they look
   like, before casefolding and case by case: Greek 'Η' looks like H but 'η' like n, and a capital such as 'Г'
   that looks like no Latin letter stays Cyrillic even though its small form 'г' passes for an r.
   '@' reads 'a' and '$' reads 's'. Digits are left alone: prompts are full of "4k" and "1920s".
4. Casefold ("ß" → "ss"), NFC (rejoins Hangul syllables), and runs of whitespace become one space.

Plain terms match on word boundaries (letters and digits), so "ass" does not hit "class" nor "cunt" "Scunthorpe";
between the words of a term any run of spaces or punctuation matches ("blow job" hits "blow-job"). Regex terms are
not normalised (that would break escapes like \\S): they run with re.IGNORECASE against the normalised prompt, so
they should be written for lowercase text without accents.

Each term is also tried on a collapsed prompt in which a run of 3+ single letters or digits separated by spaces or
punctuation ("p o r n", "p.o.r.n", "p_o_r_n") is joined into one word. Runs of one or two ("I am a cat", "a b test")
are left alone. A plain term also matches anywhere inside such a run, because a neighbouring one-letter word joins
it: "a f o r b i d d e n fruit" holds "forbidden". The price is that "a b c d" holds "abc" too.

Limits accepted: leetspeak digits ("p0rn"), plurals and compounds ("porns", "pornstar") and words split into longer
chunks ("po rn") are not caught by plain terms; admins can write a regex (r"p[o0]rns?") for those. Regexes run on
the stdlib engine, so a pathological pattern can backtrack slowly; the 200-character cap is the only guard.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

log = logging.getLogger(__name__)

MAX_TERM_LENGTH = 200

_LOOKALIKES = str.maketrans(
    {
        # Cyrillic, capital and small
        **dict(zip("АВЕКМНОРСТУХЅІЈҮҺ", "ABEKMHOPCTYXSIJYH", strict=True)),
        **dict(zip("авгекмнорстухѕіјүһԁԛԝ", "abrekmhopctyxsijyhdqw", strict=True)),
        # Greek, capital and small: the small letters look different from their capitals (η n, ν v, μ u)
        **dict(zip("ΑΒΕΖΗΙΚΜΝΟΡΤΥΧ", "ABEZHIKMNOPTYX", strict=True)),
        **dict(zip("αβεγηικμνορτυχω", "abeynikuvoptuxw", strict=True)),
        # Latin letters with a stroke that no decomposition removes; symbols that read as letters
        **dict(zip("ıłŁøØđĐħĦŧŦƒƑɑɡ@$", "ilLoOdDhHtTfFagas", strict=True)),
        # Invisible characters that are letters or symbols, not spaces, to Unicode
        **dict.fromkeys("\u115f\u1160\u2800", " "),
    }
)
_DROPPED_CATEGORIES = frozenset({"Mn", "Me", "Cf"})
_WHITESPACE = re.compile(r"\s+")
_ALNUM = r"[^\W_]"  # a letter or digit: \w without the underscore
_SEPARATOR = r"[\W_]+"  # spaces and punctuation
_SEPARATOR_RE = re.compile(_SEPARATOR)
_BETWEEN_WORDS = re.compile(rf"(?<={_ALNUM}){_SEPARATOR}(?={_ALNUM})")
_SPACED_OUT = re.compile(rf"(?<!{_ALNUM}){_ALNUM}(?:{_SEPARATOR}{_ALNUM}(?!{_ALNUM})){{2,}}")
_EMPTY_MATCH_PROBES = ("", "x", "hello world 42 .")


class InvalidTermError(ValueError):
    """A blocked term that cannot be used; the message says why, for the admin who typed it."""


@dataclass(frozen=True)
class BlockedTerm:
    text: str  # as the admin typed it (stripped)
    regex: bool = False


def normalize(text: str) -> str:
    """The form prompts and plain terms are compared in (see the module docstring for each step)."""
    decomposed = unicodedata.normalize("NFKD", text)
    kept = "".join(char for char in decomposed if unicodedata.category(char) not in _DROPPED_CATEGORIES)
    folded = kept.translate(_LOOKALIKES).casefold()
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFC", folded)).strip()


def _collapse(normalized: str) -> str:
    """Join spaced-out single characters ("p o r n" → "porn") in an already normalised prompt."""
    return _SPACED_OUT.sub(lambda match: _SEPARATOR_RE.sub("", match.group()), normalized)


def compile_term(term: BlockedTerm) -> re.Pattern[str]:
    """The pattern `TermMatcher` searches for `term`; raises `InvalidTermError` if it is unusable."""
    text = term.text.strip()
    if not text:
        raise InvalidTermError("A blocked term can't be empty.")
    if len(text) > MAX_TERM_LENGTH:
        raise InvalidTermError(
            f"A blocked term can be at most {MAX_TERM_LENGTH} characters (this one has {len(text)})."
        )
    if term.regex:
        try:
            pattern = re.compile(text, re.IGNORECASE)
        except (re.error, OverflowError, RecursionError) as exc:
            raise InvalidTermError(f"That regular expression doesn't compile: {exc}.") from exc
    else:
        normalized = normalize(text)
        if not normalized:
            raise InvalidTermError("That term is only invisible characters or accents once normalised.")
        body = _SEPARATOR.join(re.escape(word) for word in _BETWEEN_WORDS.split(normalized))
        pattern = re.compile(rf"(?<!{_ALNUM}){body}(?!{_ALNUM})", re.IGNORECASE)
    for probe in _EMPTY_MATCH_PROBES:
        if any(match.start() == match.end() for match in pattern.finditer(probe)):
            raise InvalidTermError("That regular expression matches empty text, so it would block every prompt.")
    return pattern


def make_term(text: str, *, regex: bool = False) -> BlockedTerm:
    """A new term from what an admin typed, validated now so a bad one is refused when it is added."""
    term = BlockedTerm(text=text.strip(), regex=regex)
    compile_term(term)
    return term


class TermMatcher:
    """A server's blocked terms, compiled once; `first_match` checks a prompt against them in order."""

    def __init__(self, terms: Iterable[BlockedTerm]) -> None:
        self._compiled: list[tuple[BlockedTerm, re.Pattern[str], str | None]] = []
        for term in terms:
            try:
                compact = None if term.regex else _SEPARATOR_RE.sub("", normalize(term.text))
                self._compiled.append((term, compile_term(term), compact))
            except InvalidTermError as exc:
                log.warning("Skipping blocked term %r (regex=%s): %s", term.text, term.regex, exc)

    def first_match(self, prompt: str) -> BlockedTerm | None:
        """The first term, in list order, found in the prompt or its collapsed form; None if the prompt is clean."""
        normalized = normalize(prompt)
        collapsed = _collapse(normalized)
        variants = (normalized,) if collapsed == normalized else (normalized, collapsed)
        runs = [_SEPARATOR_RE.sub("", match.group()) for match in _SPACED_OUT.finditer(normalized)]
        for term, pattern, compact in self._compiled:
            if any(pattern.search(variant) for variant in variants):
                return term
            if compact and any(compact in run for run in runs):
                return term
        return None
