"""Blocked terms: a server's list of words, phrases or regular expressions that a prompt must not contain.

A prompt is checked before any paid API call. Both the prompt and plain terms go through `normalize`:

1. NFKC (fullwidth, ligatures, circled, mathematical and other styled letters, "①" → "1"). Then dropped: controls
   other than whitespace (disarm would apply backspace and delete: "f<DEL>orbidden" would read "orbidden"), format
   characters (zero-width space and joiners, soft hyphen, bidi controls, tags), lone surrogates, the invisible
   "letters" that would read as a space inside a word (Hangul fillers U+115F U+1160 U+3164 U+FFA0, braille blank
   U+2800), and every combining mark (`disarm.strip_accents`: accents, zalgo, also Indic vowel signs), so "ё"
   is a Cyrillic "е" that step 3 reads "e".
2. Case folding ("ß" → "ss"), before disarm: UTS #39 reads a capital "I" as "l", so "ILLEGAL" would read "lllegal".
3. `disarm.skeleton_key` (disarm 0.17, Unicode 17 confusables.txt): each look-alike becomes the Latin letter it
   passes for: Cyrillic, Greek, Armenian ("ոսհօ" → "nuho"), Cherokee ("ᎠᎬᎳᏚ" → "dews"), Latin small capitals
   ("ꜰᴏʀʙɪᴅᴅᴇɴ"), "ı ł ø đ". Digits stay digits ("4k", "1920s"); "|", "ǀ" and other uncased strokes read "l", so
   "illegal" and "lllegal" stay apart. Any mark that comes out of it is dropped again, and whitespace
   runs become one space. The result is a fixed point (checked for every code point): normalising it is a no-op.

Folding case first loses capitals that look like a Latin letter their small form does not (Greek "Η" is an H, "η"
an n; "Μ Ν Υ Ζ", Cyrillic "Б"). A prompt holding one of these 44 (disarm's skeleton of the character differs from
its folded form's) is also read with each turned into that Latin letter.

Plain terms match whole words: the characters on each side must not be letters or digits, so "ass" does not hit
"class" nor "cunt" "Scunthorpe"; between the words of a term any run of spaces or punctuation matches ("blow job"
hits "blow-job", "blow—job"); punctuation at a term's edges is literal ("c++", an emoji). Each term is also tried on
a collapsed prompt in which a run of 3+ single letters or digits separated by spaces or punctuation ("p o r n",
"p.o.r.n") is joined into one word, and a plain term matches anywhere inside such a run ("a f o r b i d d e n
fruit"; the price: "a b c d" holds "abc"). Plain terms are compiled together into one RE2 set (a few for lists of
very long terms) that finds all of them in a single pass.

Regex terms use RE2 syntax, which runs in time linear in the prompt: no backreferences, lookarounds, atomic groups
or possessive quantifiers (refused when added, saying why); "\\w \\d \\s \\b" are ASCII-only ("\\pL" is any letter).
They run case-insensitively on the normalised prompt (and its collapsed form), so write them for lowercase text
without accents. Linear is not cheap: RE2's worst case costs ~2.5 ns per compiled instruction and ~75 ns per
regex for each character, so a server's regexes together may compile to REGEX_BUDGET instructions (30 more per
regex): the costliest lists we found take ~27 ms on the longest prompt. Each may also use at most REGEX_MAX_MEM.

A prompt whose normalised form is longer than MAX_NORMALIZED_LENGTH (twice the prompt limit) raises
`PromptTooComplexError` instead of being checked in part, which would let the rest through.

Not caught: leetspeak digits and symbols ("p0rn", "p@rn": the old hand-made table read "@" and "$" as "a" and "s"),
plurals and compounds ("porns", "pornstar"), words split into chunks longer than one character ("po rn"),
look-alikes spanning several characters ("rn" for "m", "vv" for "w") or not in Unicode's confusables, I-like
strokes standing for "i" ("forb|dden"), emoji and pictures of letters ("🇫🇴🇷"). Admins can write a regex for those
(r"p[o0@]rns?").
"""

from __future__ import annotations

import logging
import re
import sys
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, cast

import disarm
import re2

from bot.params import PROMPT_MAX_LENGTH

log = logging.getLogger(__name__)

MAX_TERM_LENGTH = 200
REGEX_BUDGET = 2000  # RE2 instructions: "p[o0]rns?" is 13, "[a-z]" 10, "\pL" 1201; plus _REGEX_OVERHEAD each
_REGEX_OVERHEAD = 30  # a regex's own pass over the prompt costs about as much as 30 instructions
REGEX_MAX_MEM = 256 * 1024  # per regex: its program (≤ REGEX_BUDGET) and its DFA cache
# Real prompts in any script normalise to about their own length (accents and invisibles only shrink them; a
# ligature or "㎏" adds a character). Only stacked expanding characters (U+FDFA is 18 letters) double one.
MAX_NORMALIZED_LENGTH = 2 * PROMPT_MAX_LENGTH
# An RE2 set holds patterns of up to _SET_CHUNK UTF-8 bytes (at most ~1 instruction each), so that any list compiles
# within _SET_MAX_MEM per set, DFA included: 500 ordinary terms make one set, 500 terms of 200 emoji about 25.
_SET_CHUNK = 64_000
_SET_MAX_MEM = 16 * 1024 * 1024

_ALNUM = r"[^\W_]"  # a letter or digit: \w without the underscore
_SEPARATOR = r"[\W_]+"  # spaces and punctuation
_SEPARATOR_RE = re.compile(_SEPARATOR)
_BETWEEN_WORDS = re.compile(rf"(?<={_ALNUM}){_SEPARATOR}(?={_ALNUM})")
_SPACED_OUT = re.compile(rf"(?<!{_ALNUM}){_ALNUM}(?:{_SEPARATOR}{_ALNUM}(?!{_ALNUM})){{2,}}")
_SYMBOL = re.compile(r"[^\w\x00-\x7f]")  # neither ASCII nor a letter or digit: emoji, dashes, CJK punctuation
# In the word view (`_word_view`), exactly the characters that are not letters or digits. RE2's "[^\pL\pN]" is
# ~1350 instructions, twice per term: 500 terms would not fit in one set.
_GAP = r"[\x00-\x2f\x3a-\x40\x5b-\x60\x7b-\x7f]"
_EMPTY_MATCH_PROBES = ("", "x", "hello world 42 .")
_UNSUPPORTED = (  # how RE2's error starts → what the admin wrote (the catalogue's term.feature.<name>)
    (r"invalid perl operator: \(\?=", "lookahead"),
    (r"invalid perl operator: \(\?!", "negative_lookahead"),
    (r"invalid perl operator: \(\?<", "lookbehind"),
    (r"invalid perl operator: \(\?P", "named_backreference"),
    (r"invalid escape sequence: \\[1-9]", "backreference"),
    (r"invalid perl operator: \(\?>", "atomic_group"),
    (r"invalid perl operator: \(\?\(", "conditional"),
    (r"bad repetition operator: ", "possessive"),
    (r"invalid repetition size: ", "repeat_count"),
)


class InvalidTermError(ValueError):
    """A blocked term that cannot be used: why (`problem`, the catalogue's `term.<problem>`) and the
    figures the admin who typed it is told (`bot.render.term_error_text` words it)."""

    def __init__(self, problem: str, **values: object) -> None:
        super().__init__(f"{problem} {values}")
        self.problem = problem
        self.values = values


class PromptTooComplexError(ValueError):
    """The prompt's normalised form is too long to check in bounded time (the member is told by the
    refusal it becomes, `Refused.TOO_COMPLEX`)."""

    def __init__(self, length: int) -> None:
        self.length = length
        super().__init__(f"prompt too long once normalised: {length} characters, over {MAX_NORMALIZED_LENGTH}")


@dataclass(frozen=True)
class BlockedTerm:
    text: str  # as the admin typed it (stripped)
    regex: bool = False


class _Match(Protocol):
    def start(self) -> int: ...
    def end(self) -> int: ...


class _Regex(Protocol):
    programsize: int

    def search(self, text: str) -> _Match | None: ...
    def finditer(self, text: str) -> Iterator[_Match]: ...


@dataclass(frozen=True)
class CompiledTerm:
    """What `TermMatcher` looks for: a regex term's RE2 program, or a plain term's RE2 pattern for the word view."""

    term: BlockedTerm
    pattern: str  # RE2 syntax
    regex: _Regex | None = None
    compact: str = ""  # a plain term's letters and digits, looked for inside spelled-out runs


def _tables() -> tuple[dict[int, None], dict[int, str]]:
    """What `_prepare` drops (controls but whitespace: disarm would apply backspace and delete, "f<DEL>o" reading
    "o"; format characters, surrogates, invisible fillers) and the capital look-alikes (module docstring)."""
    dropped: dict[int, None] = dict.fromkeys([0x115F, 0x1160, 0x2800, 0x3164, 0xFFA0])
    looks = {}
    for code in range(sys.maxunicode + 1):  # ~0.25 s, once
        char = chr(code)
        if unicodedata.category(char) in ("Cc", "Cf", "Cs") and not char.isspace():
            dropped[code] = None
        elif (folded := char.casefold()) != char:
            own = disarm.skeleton_key(char)
            if own != disarm.skeleton_key(folded) and own.isascii() and own.isalpha() and "l" not in own:
                looks[code] = own
    return dropped, looks


_DROPPED, _CAPITAL_LOOKS = _tables()


def _prepare(text: str) -> str:
    """NFKC, invisibles dropped, marks stripped: before case folding, which turns U+0345 (a mark) into an "i"."""
    return disarm.strip_accents(unicodedata.normalize("NFKC", text).translate(_DROPPED))


def _fold(prepared: str) -> str:
    return " ".join(disarm.strip_accents(disarm.skeleton_key(prepared.casefold())).split())


def normalize(text: str) -> str:
    """The form prompts and plain terms are compared in (see the module docstring for each step)."""
    return _fold(_prepare(text))


def _readings(prompt: str) -> list[str]:
    """The normalised prompt, and its reading with capital look-alikes if that differs, each within the bound."""
    prepared = _prepare(prompt)
    readings = [_fold(prepared)]
    if (looks := prepared.translate(_CAPITAL_LOOKS)) != prepared:
        readings = list(dict.fromkeys([*readings, _fold(looks)]))
    for reading in readings:
        if len(reading) > MAX_NORMALIZED_LENGTH:
            raise PromptTooComplexError(len(reading))
    return readings


def _collapse(normalized: str) -> str:
    """Join spaced-out single characters ("p o r n" → "porn") in an already normalised prompt."""
    return _SPACED_OUT.sub(lambda match: _SEPARATOR_RE.sub("", match.group()), normalized)


def _spell_symbol(match: re.Match[str]) -> str:
    code = ord(match.group())
    return "\x01" + "".join(chr(0x10 | code >> shift & 0xF) for shift in range(20, -1, -4))


def _word_view(normalized: str) -> str:
    """The text with each non-ASCII symbol spelled as seven ASCII control characters ("🍆" → "\\x01\\x10\\x11…"):
    there, "not a letter or digit" is the small ASCII class `_GAP`, and a term can still name an emoji."""
    return _SYMBOL.sub(_spell_symbol, normalized)


def _options(max_mem: int, *, case_sensitive: bool = True) -> Any:
    options = re2.Options()
    options.max_mem, options.log_errors, options.never_capture = max_mem, False, True
    options.case_sensitive = case_sensitive
    return options


def _cost(regex: _Regex) -> int:
    return regex.programsize + _REGEX_OVERHEAD


def _compile_regex(text: str) -> _Regex:
    """The admin's pattern on RE2, or `InvalidTermError` saying what RE2 can't run and why it is refused."""
    try:
        regex = cast(_Regex, re2.compile(text, _options(REGEX_MAX_MEM, case_sensitive=False)))
    except (re2.error, ValueError) as exc:  # ValueError: a lone surrogate cannot be encoded
        reason = exc.args[0] if exc.args else exc
        error = reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
    else:
        if _cost(regex) <= REGEX_BUDGET:
            return regex
        error = "pattern too large"
    if error.startswith("pattern too large"):
        raise InvalidTermError("too_big", budget=REGEX_BUDGET)
    for prefix, feature in _UNSUPPORTED:
        if re.match(prefix, error):
            raise InvalidTermError("unsupported", feature=feature, error=error)
    raise InvalidTermError("no_compile", error=error)


def compile_term(term: BlockedTerm) -> CompiledTerm:
    """What `TermMatcher` looks for for `term`; raises `InvalidTermError` if it is unusable."""
    text = term.text.strip()
    if not text:
        raise InvalidTermError("empty")
    if len(text) > MAX_TERM_LENGTH:
        raise InvalidTermError("too_long", limit=MAX_TERM_LENGTH, length=len(text))
    if term.regex:
        regex = _compile_regex(text)
        if any(match.start() == match.end() for probe in _EMPTY_MATCH_PROBES for match in regex.finditer(probe)):
            raise InvalidTermError("empty_match")
        return CompiledTerm(term, text, regex=regex)
    normalized = normalize(text)
    if not normalized:
        raise InvalidTermError("invisible")
    if len(normalized) > MAX_TERM_LENGTH:
        raise InvalidTermError("too_long_normalised", limit=MAX_TERM_LENGTH, length=len(normalized))
    body = f"{_GAP}+".join(re2.escape(_word_view(word)) for word in _BETWEEN_WORDS.split(normalized))
    return CompiledTerm(term, f"(?:^|{_GAP}){body}(?:{_GAP}|$)", compact=_SEPARATOR_RE.sub("", normalized))


def make_term(text: str, *, regex: bool = False) -> BlockedTerm:
    """A new term from what an admin typed, validated now so a bad one is refused when it is added."""
    term = BlockedTerm(text=text.strip(), regex=regex)
    compile_term(term)
    return term


def _regexes_cost(terms: Iterable[BlockedTerm]) -> int:
    cost = 0
    for term in terms:
        try:
            regex = compile_term(term).regex if term.regex else None
        except InvalidTermError:
            regex = None  # skipped by TermMatcher too
        cost += _cost(regex) if regex is not None else 0
    return cost


def check_room(terms: Iterable[BlockedTerm], term: BlockedTerm) -> None:
    """Raises `InvalidTermError` if adding `term` would take the list's regexes over REGEX_BUDGET."""
    if term.regex and (total := _regexes_cost(terms) + _regexes_cost([term])) > REGEX_BUDGET:
        raise InvalidTermError("over_budget", total=total, budget=REGEX_BUDGET)


class _PatternSet:
    """RE2 patterns searched together, one linear pass per RE2 set (see _SET_CHUNK); `hits` are the indexes, in
    adding order, of those found."""

    def __init__(self, patterns: list[str]) -> None:
        self._sets: list[tuple[int, Any]] = []  # (index of its first pattern, RE2 set)
        size = 0
        for index, pattern in enumerate(patterns):
            if not self._sets or size + len(pattern.encode()) > _SET_CHUNK:
                self._sets.append((index, re2.Set.SearchSet(_options(_SET_MAX_MEM))))
                size = 0
            self._sets[-1][1].Add(pattern)
            size += len(pattern.encode())
        for _, patterns_set in self._sets:
            patterns_set.Compile()

    def hits(self, text: str) -> list[int]:
        return [first + hit for first, found in self._sets for hit in (found.Match(text) or ())] if text else []


class TermMatcher:
    """A server's blocked terms, compiled once; `first_match` checks a prompt against them in list order.

    Plain terms are one RE2 set over the word view and one over the spelled-out runs: a pass finds every term
    present, and the first in list order is the smallest index. Regexes are separate RE2 programs tried in
    list order, only those listed before the first plain hit: a lone RE2 program falls back to its NFA when a
    hostile pattern would thrash the DFA, which a set cannot, and was twice as fast as one in that case."""

    def __init__(self, terms: Iterable[BlockedTerm]) -> None:
        self._terms: list[BlockedTerm] = []
        self._regexes: list[tuple[int, _Regex]] = []
        words: list[str] = []
        compacts: list[str] = []
        self._word_terms: list[int] = []
        self._compact_terms: list[int] = []
        cost = 0
        for term in terms:
            try:
                compiled = compile_term(term)
                if compiled.regex is not None and cost + _cost(compiled.regex) > REGEX_BUDGET:
                    raise InvalidTermError("budget_used_before", cost=cost, budget=REGEX_BUDGET)
            except InvalidTermError as exc:
                log.warning("Skipping blocked term %r (regex=%s): %s", term.text, term.regex, exc)
                continue
            index = len(self._terms)
            self._terms.append(term)
            if compiled.regex is not None:
                self._regexes.append((index, compiled.regex))
                cost += _cost(compiled.regex)
                continue
            words.append(compiled.pattern)
            self._word_terms.append(index)
            if compiled.compact:
                compacts.append(re2.escape(compiled.compact))
                self._compact_terms.append(index)
        self._words = _PatternSet(words)
        self._compacts = _PatternSet(compacts)

    def first_match(self, prompt: str) -> BlockedTerm | None:
        """The first term, in list order, found in the prompt; None if it is clean. Raises `PromptTooComplexError`
        if a reading of the prompt is longer than MAX_NORMALIZED_LENGTH, unless there are no terms."""
        if not self._terms:
            return None
        first = len(self._terms)
        for reading in _readings(prompt):
            for text in dict.fromkeys((reading, _collapse(reading))):
                first = min([first, *(self._word_terms[hit] for hit in self._words.hits(_word_view(text)))])
                for index, regex in self._regexes:
                    if index >= first:
                        break
                    if regex.search(text) is not None:
                        first = index
                        break
            runs = " ".join(_SEPARATOR_RE.sub("", match.group()) for match in _SPACED_OUT.finditer(reading))
            first = min([first, *(self._compact_terms[hit] for hit in self._compacts.hits(runs))])
        return self._terms[first] if first < len(self._terms) else None
