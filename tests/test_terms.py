"""Blocked terms: normalisation tricks are caught, ordinary prompts are not, bad terms are refused, and every
check takes bounded time (measured: the figures are printed, run with -s to see them)."""

from __future__ import annotations

import logging
import random
import string
import time
from collections.abc import Callable
from functools import partial

import pytest

from bot.moderation.terms import (
    MAX_NORMALIZED_LENGTH,
    REGEX_BUDGET,
    BlockedTerm,
    InvalidTermError,
    PromptTooComplexError,
    TermMatcher,
    check_room,
    compile_term,
    make_term,
    normalize,
)
from bot.render import term_error_text

PORN = BlockedTerm("porn")
FORBIDDEN = BlockedTerm("forbidden")
BOUND_MS = 50  # generous: every check below takes a few milliseconds; the old code took seconds


def blocked(prompt: str, *terms: BlockedTerm) -> BlockedTerm | None:
    return TermMatcher(terms or (PORN,)).first_match(prompt)


def best_ms(call: Callable[[], object], label: str) -> float:
    """The fastest of five runs in milliseconds (a busy CI machine only ever adds time), printed."""
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        call()
        runs.append((time.perf_counter() - start) * 1000)
    print(f"{label}: {min(runs):.2f} ms (runs: {', '.join(f'{r:.2f}' for r in runs)})")
    return min(runs)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PoRn", "porn"),
        ("\u0440\u043e\u0433n", "porn"),  # Cyrillic р о г
        ("\u03a1\u039f\u03a1N", "popn"),  # Greek capitals Ρ Ο Ρ: look like P O P
        ("\u03bd\u03b1\u03b9", "vai"),  # Greek small ν α ι
        ("\u041d\u0415\u041b\u041b\u041e", "he\u043b\u043bo"),  # Cyrillic Н Е О read H E O; Л stays
        ("\uff30\uff4f\uff52\uff4e", "porn"),  # fullwidth
        ("\ufb01ne", "fine"),  # ligature
        ("p\u00f6rn\u0301", "porn"),  # precomposed and combining accents
        ("p\u200bo\u200dr\u00adn\ufeff", "porn"),  # zero-width space and joiner, soft hyphen, BOM
        ("Stra\u00dfe \u0141\u00f3d\u017a \u00d8re \u0131t", "strasse lodz ore it"),
        ("p@$$word", "p@$$word"),  # the old hand-made table read @ and $ as a and s: leetspeak, not look-alikes
        ("  a \t\n b\u00a0\u00a0c  ", "a b c"),
        ("a 4k photo from the 1920s", "a 4k photo from the 1920s"),  # digits are left alone
        # Unicode's confusables (disarm's UTS #39 skeletons) instead of the old table:
        ("f\x01orbidden", "forbidden"),  # a control character inside the word
        ("\ua730\u1d0f\u0280\u0299\u026a\u1d05\u1d05\u1d07\u0274", "forbidden"),  # ꜰᴏʀʙɪᴅᴅᴇɴ: small capitals
        ("\u0578\u057d\u0570\u0585", "nuho"),  # Armenian ո ս հ օ
        ("\u13a0\u13ac\u13b3\u13da", "dews"),  # Cherokee Ꭰ Ꭼ Ꮃ Ꮪ
        ("forb\u3164idden forb\uffa0idden forb\u115fidden forb\u2800idden", "forbidden " * 3 + "forbidden"),
        ("FORBIDDEN", "forbidden"),  # TR39 alone reads a capital I as l: case is folded first
        ("ILLEGAL Illegal", "illegal illegal"),
        ("\U0001d405\U0001d40e\U0001d411\U0001d401\U0001d408\U0001d403", "forbid"),  # 𝐅𝐎𝐑𝐁𝐈𝐃: maths bold
        ("f\u043erb\u0456dd\u0451n", "forbidden"),  # Cyrillic о і ё: the mark goes, then the look-alike
        ("\u2460\u2461 \u216b", "12 xii"),  # circled digits stay digits; a Roman numeral is letters
    ],
)
def test_normalize(text, expected):
    assert normalize(text) == expected
    assert normalize(expected) == expected  # a fixed point: a term and a prompt meet in one form


def test_normalize_is_a_fixed_point_for_every_character():
    # Checked over all 1.1 million code points once (4.7 s); here a sample of the troublesome blocks.
    blocks = [range(0x0080, 0x0600), range(0x1D00, 0x1E00), range(0x2000, 0x2200), range(0xFB00, 0xFB50)]
    for code in (code for block in blocks for code in block):
        once = normalize(f"x{chr(code)}y")
        assert normalize(once) == once, hex(code)


@pytest.mark.parametrize(
    "prompt",
    [
        "PORN",
        "some Porn please",
        "\u0440\u043e\u0433n",  # Cyrillic р о г + Latin n
        "\u0440\u03bf\u0433n",  # Cyrillic р, Greek ο, Cyrillic г
        "\u03a1\u041erN",  # Greek Ρ, Cyrillic О
        "\uff30\uff2f\uff32\uff2e",  # fullwidth
        "p\u00f3rn",
        "p\u200bo\u200cr\u2060n",
        "p o r n",
        "p.o.r.n",
        "p-o-r-n",
        "p_o_r_n",
        "p . o . r . n star",
        "the word is: porn!",
    ],
)
def test_tricks_do_not_slip_through(prompt):
    assert blocked(prompt) == PORN


@pytest.mark.parametrize(
    "prompt",
    [
        "a f\x01orbidden fruit",
        "a f\x7forbidden fruit",
        "a \ua730\u1d0f\u0280\u0299\u026a\u1d05\u1d05\u1d07\u0274 fruit",  # ꜰᴏʀʙɪᴅᴅᴇɴ
        "a forb\u3164idden fruit",  # Hangul filler
        "a forb\uffa0idden fruit",  # halfwidth Hangul filler
        "a forb\u2800idden fruit",  # braille blank
        "a FORBIDDEN fruit",
        "a \U0001d405\U0001d40e\U0001d411\U0001d401\U0001d408\U0001d403\U0001d403\U0001d404\U0001d40d fruit",
        "a \u24d5\u24de\u24e1\u24d1\u24d8\u24d3\u24d3\u24d4\u24dd fruit",  # ⓕⓞⓡⓑⓘⓓⓓⓔⓝ
        "a f\u043erb\u0456dd\u0451n fruit",  # Cyrillic о і ё
        "a f\u200bo\u2066r\u2069b\U000e0041idden fruit",  # zero-width space, bidi isolates, a tag character
        "a fo\u0336r\u0335b\u0337i\u0338dden fruit",  # zalgo strokes
        "a f o r \u3164 b i d d e n fruit",
    ],
)
def test_look_alikes_and_invisibles_do_not_slip_through(prompt):
    assert blocked(prompt, FORBIDDEN) == FORBIDDEN


def test_armenian_and_cherokee_look_alikes_are_caught():
    assert blocked("a \u0578\u0585\u057d\u0578 here", BlockedTerm("noun")) is not None  # Armenian ո օ ս ո
    assert blocked("some \u13a0\u13ac\u13b3\u13da", BlockedTerm("dews")) is not None  # Cherokee Ꭰ Ꭼ Ꮃ Ꮪ


def test_capitals_that_look_latin_are_read_both_ways():
    # Greek Η Ε: folded they read "ne", as they look "HE"; the prompt is checked in both readings.
    assert blocked("\u0397\u0395LLO world", BlockedTerm("hello")) is not None
    assert blocked("\u03b7\u03b5llo world", BlockedTerm("nello")) is not None
    # Case-insensitive in every script, not only Latin.
    assert blocked("\u0411\u041b\u042f\u0414\u042c!", BlockedTerm("\u0431\u043b\u044f\u0434\u044c")) is not None


@pytest.mark.parametrize(
    ("term", "prompt"),
    [
        ("lllegal", "illegal"),  # TR39's I ≡ l must not turn every i into l
        ("lllegal", "ILLEGAL"),
        ("illegal", "lllegal"),
        ("ass", "a classic painting"),
        ("cunt", "a pub in Scunthorpe"),
        ("sum", "a summer day"),
        ("summer", "a surnrner day"),  # multi-character look-alikes are not caught (documented)
        ("l920s", "a photo from the 1920s"),  # digits stay digits
        ("ak", "a 4k photo"),
        ("porn", "p0rn"),  # leetspeak is not caught (documented)
        ("porn", "p@rn"),
        ("porn", "porns and pornstars"),  # nor plurals and compounds
        ("porn", "po rn"),  # nor chunks longer than one character
        ("forbidden", "forb|dden"),  # an I-like stroke reads l
        ("hello", "\u03b7\u03b5llo"),  # small Greek η looks like n, not h
    ],
)
def test_no_false_positives_and_documented_misses(term, prompt):
    assert blocked(prompt, BlockedTerm(term)) is None


@pytest.mark.parametrize(
    ("term", "prompt", "hit"),
    [
        ("ass", "a classic painting", False),
        ("ass", "an AI assistant", False),
        ("ass", "kick ass", True),
        ("cunt", "a pub in Scunthorpe", False),
        ("cunt", "Cunt!", True),
        ("porn", "pornographic art, a popcorn stand", False),
        ("abc", "label the corners a b c d", True),  # inside a spelled-out run: accepted as a match
        ("forbidden", "a f o r b i d d e n fruit", True),  # the article joins the run
        ("abc", "label the corners a and b", False),
        ("abcd", "label the corners a b c d", True),
        ("ab", "a b test", False),
        ("cat", "I am a cat", True),
        ("mac", "I am a cat", False),
        ("iam", "I am a cat", False),
    ],
)
def test_plain_terms_match_whole_words(term, prompt, hit):
    assert (blocked(prompt, BlockedTerm(term)) is not None) is hit


@pytest.mark.parametrize(
    ("prompt", "hit"),
    [
        ("a blow job", True),
        ("a BLOW-JOB", True),
        ("blow...job", True),
        ("blow_job", True),
        ("blow\u2014job", True),  # an em dash: punctuation outside ASCII
        ("blow\U0001f346job", True),  # so is an emoji
        ("a blowjob", False),
        ("a blow to the job market", False),
        ("b l o w j o b", True),  # spelled out, it holds the phrase without its space
    ],
)
def test_multi_word_phrases_match_across_punctuation(prompt, hit):
    assert (blocked(prompt, BlockedTerm("Blow Job")) is not None) is hit


def test_a_hyphenated_term_matches_with_spaces_too():
    assert blocked("a blow job", BlockedTerm("blow-job")) is not None


def test_a_term_with_punctuation_at_its_edges_is_matched_literally():
    term = BlockedTerm("c++")
    assert blocked("write c++ code", term) == term
    assert blocked("write c code", term) is None


@pytest.mark.parametrize(
    ("prompt", "hit"),
    [("an \U0001f346 please", True), ("\U0001f346\U0001f346", True), ("x\U0001f346", False), ("a \U0001f351", False)],
)
def test_an_emoji_can_be_a_term(prompt, hit):
    assert (blocked(prompt, BlockedTerm("\U0001f346")) is not None) is hit


@pytest.mark.parametrize(
    ("pattern", "prompt", "hit"),
    [
        (r"p[o0]rns?", "P0RNS", True),
        (r"p[o0]rns?", "\u0440\u043e\u0433n", True),  # runs on the normalised prompt
        (r"B[O0]+BS?", "big boobs", True),  # case-insensitive: upper-case pattern, lower-case prompt
        (r"B[O0]+BS?", "bobsled", True),  # a regex has no implicit word boundaries
        (r"\bb[o0]+bs?\b", "bobsled", False),
        (r"nsfw", "n s f w please", True),  # also searched in the collapsed prompt
        (r"^draw", "please draw a cat", False),
        (r"\pL\d", "\u4e00 1 a1", True),  # Unicode classes work, within the budget
    ],
)
def test_regex_terms(pattern, prompt, hit):
    assert (blocked(prompt, BlockedTerm(pattern, regex=True)) is not None) is hit


def test_first_match_returns_the_first_listed_term_object():
    cat = BlockedTerm("cat")
    dog = BlockedTerm("d[o0]g", regex=True)
    matcher = TermMatcher([BlockedTerm("horse"), dog, cat])
    found = matcher.first_match("a cat and a d0g")
    assert found is dog
    assert matcher.first_match("a cat") is cat
    assert matcher.first_match("a horse") == BlockedTerm("horse")
    assert matcher.first_match("a bird") is None


def test_list_order_wins_over_prompt_order_whichever_way_a_term_is_found():
    dog, cat, bird = BlockedTerm("dog"), BlockedTerm("cat"), BlockedTerm("b[i1]rd", regex=True)
    matcher = TermMatcher([dog, cat, bird])
    assert matcher.first_match("a bird, a cat, then a dog") is dog
    assert matcher.first_match("a b1rd, then a cat") is cat
    assert matcher.first_match("a bird, then c a t and d o g") is dog  # spelled-out runs count too
    assert TermMatcher([bird, cat]).first_match("a cat and a bird") is bird


def test_an_empty_matcher_blocks_nothing():
    assert TermMatcher([]).first_match("porn") is None
    assert TermMatcher([]).first_match("\ufdfa" * 2000) is None  # nothing to check: no length limit either


def test_make_term_strips_and_validates():
    assert make_term("  Porn \n") == BlockedTerm("Porn")
    assert make_term(r" p[o0]rn ", regex=True) == BlockedTerm(r"p[o0]rn", regex=True)
    assert make_term("x" * 200) == BlockedTerm("x" * 200)


@pytest.mark.parametrize(
    ("text", "regex", "says"),
    [
        ("", False, "empty"),
        ("   \t", True, "empty"),
        ("x" * 201, False, "at most 200 characters (this one has 201)"),
        ("a" * 201, True, "at most 200 characters"),
        ("\u200b\u0301", False, "invisible"),
        ("\ufdfa" * 12, False, "at most 200 characters once normalised"),
        ("p[o0rn", True, "doesn't compile: missing ]"),
        (r"\Z", True, "doesn't compile: invalid escape sequence: \\Z"),
        ("a*", True, "matches empty text"),
        ("porn|", True, "matches empty text"),
        (r"\b", True, "matches empty text"),
        # What RE2 can't run, refused with the reason:
        ("(?=x)porn", True, "uses a lookahead (?=…), which RE2 doesn't support"),
        ("p(?!x)orn", True, "uses a negative lookahead"),
        ("(?<=x)porn", True, "uses a lookbehind"),
        ("(?<!x)porn", True, "uses a lookbehind"),
        (r"(p)orn\1", True, "uses a backreference (\\1 to \\9)"),
        (r"(p)(o)rn\2", True, "uses a backreference (\\1 to \\9)"),
        ("(?P<p>p)orn(?P=p)", True, "uses a backreference (?P=name)"),
        ("(?>porn)", True, "uses an atomic group"),
        ("porn++", True, "possessive"),
        ("a{1001}", True, "a repeat count above 1000"),
        (r"\pL{20}", True, "too big"),  # max_mem: refused instead of compiled
        (r"(?:.*.{30}){20}x", True, "too big"),  # within max_mem, over the time budget
    ],
)
def test_make_term_refuses_unusable_terms(text, regex, says):
    with pytest.raises(InvalidTermError) as info:
        make_term(text, regex=regex)
    assert says in term_error_text(info.value)  # what the admin reads
    assert isinstance(info.value, ValueError)


def test_refusals_say_why_for_the_admin():
    with pytest.raises(InvalidTermError) as info:
        make_term(r"(\w+)\s+\1", regex=True)
    said = term_error_text(info.value)
    assert "RE2" in said and "slow" in said


def test_compile_term_raises_for_a_bad_stored_term():
    with pytest.raises(InvalidTermError):
        compile_term(BlockedTerm("(unclosed", regex=True))
    regex = compile_term(BlockedTerm("(closed)", regex=True)).regex
    assert regex is not None and regex.search("CLOSED") is not None


def test_a_matcher_skips_a_stored_term_that_no_longer_compiles(caplog):
    good = BlockedTerm("porn")
    with caplog.at_level(logging.WARNING, logger="bot.moderation.terms"):
        matcher = TermMatcher([BlockedTerm("(unclosed", regex=True), BlockedTerm(""), good])
    assert matcher.first_match("(unclosed porn") is good
    assert matcher.first_match("(unclosed") is None
    assert "(unclosed" in caplog.text
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2


def test_a_servers_regexes_share_one_budget(caplog):
    big = [BlockedTerm(rf"(?:.*.{{30}}){{3}}x{i}", regex=True) for i in range(3)]  # 759 instructions each
    check_room(big[:1], big[1])
    with pytest.raises(InvalidTermError) as info:
        check_room(big[:2], big[2])
    assert f"of the {REGEX_BUDGET:,} RE2 instructions" in term_error_text(info.value)
    check_room(big, BlockedTerm("porn"))  # plain terms cost nothing from it
    with caplog.at_level(logging.WARNING, logger="bot.moderation.terms"):
        matcher = TermMatcher([*big, FORBIDDEN])  # a list stored before the budget: the excess is skipped
    assert "budget_used_before" in caplog.text
    assert matcher.first_match("forbidden") is FORBIDDEN
    assert matcher.first_match("a" * 300 + "x2") is None and matcher.first_match("a" * 300 + "x1") is big[1]


def test_a_backtracking_regex_runs_in_linear_time():
    # (\w+\s?)+$ backtracks exponentially on the stdlib engine: 30 characters took ~50 s, 26 took 3 s.
    term = make_term(r"(\w+\s?)+$", regex=True)
    matcher = TermMatcher([term])
    short = "a" * 29 + "!"
    long = ("an ordinary prompt " * 106)[:1999] + "!"
    assert best_ms(lambda: matcher.first_match(short), "(\\w+\\s?)+$ on 30 characters") < BOUND_MS
    assert best_ms(lambda: matcher.first_match(long), "(\\w+\\s?)+$ on 2000 characters") < BOUND_MS
    assert matcher.first_match(short) is None and matcher.first_match("all words here") is term


@pytest.mark.parametrize("pattern", [r"(.*.*)*!", r"(\w+\s?)+$", r"(a|aa)+$", r"(x+x+)+y", r"(\w*\s*)*!"])
def test_adding_a_pathological_regex_returns_at_once(pattern):
    # The old empty-match probes ran (.*.*)*! on "hello world 42 ." with the stdlib engine: it never returned.
    # RE2 caches compiled patterns: only the first run is a real compile, so that is the one measured.
    start = time.perf_counter()
    make_term(pattern, regex=True)
    elapsed = (time.perf_counter() - start) * 1000
    print(f"make_term({pattern}) compiled and probed in {elapsed:.2f} ms")
    assert elapsed < BOUND_MS


def five_hundred_terms() -> list[BlockedTerm]:
    rng = random.Random(500)
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(4, 9))) for _ in range(700)]
    return [BlockedTerm(" ".join(rng.sample(words, rng.choice([1, 1, 1, 2, 3])))) for _ in range(499)] + [FORBIDDEN]


def test_500_plain_terms_against_the_longest_prompts_stay_fast():
    matcher = TermMatcher(five_hundred_terms())
    ordinary = ("a watercolour of a lighthouse at dawn, gulls, soft light, " * 40)[:2000]
    assert best_ms(lambda: matcher.first_match(ordinary), "500 terms, 2000 ordinary characters") < BOUND_MS
    at_bound = "\ufdfa" * 221 + " forbidden"  # 221 x 18 letters + 10: just under the bound
    assert len(normalize(at_bound)) <= MAX_NORMALIZED_LENGTH
    assert best_ms(lambda: matcher.first_match(at_bound), "500 terms, U+FDFA up to the bound") < BOUND_MS
    assert matcher.first_match(at_bound) is FORBIDDEN
    spelled = " ".join("forbidden" * 222)[:3999]
    assert best_ms(lambda: matcher.first_match(spelled), "500 terms, 4000 spelled-out characters") < BOUND_MS


def test_any_list_of_500_longest_terms_compiles_and_stays_fast():
    rng = random.Random(200)
    emoji = [chr(code) for code in range(0x1F300, 0x1F5FF)]  # 7 bytes each in the word view: the largest terms
    terms = [BlockedTerm("".join(rng.choices(emoji, k=200))) for _ in range(499)] + [BlockedTerm(emoji[0] * 3)]
    matcher = TermMatcher(terms)
    prompt = "".join(rng.choices(emoji[1:], k=1996)) + " " + emoji[0] * 3
    assert best_ms(lambda: matcher.first_match(prompt), "500 terms of 200 emoji, 2000 emoji") < BOUND_MS
    assert matcher.first_match(prompt) is terms[-1]


def test_a_prompt_too_long_once_normalised_is_refused_not_truncated():
    matcher = TermMatcher(five_hundred_terms())
    fdfa = "\ufdfa" * 2000  # 2000 characters that normalise to 36000: the old code took ~0.3 s here

    def refused() -> None:
        with pytest.raises(PromptTooComplexError):
            matcher.first_match(fdfa)

    assert best_ms(refused, "500 terms, 2000 x U+FDFA (refused)") < BOUND_MS
    hidden = "\ufdfa" * 250 + " forbidden"  # the term past the bound must not be let through unseen
    with pytest.raises(PromptTooComplexError) as info:
        matcher.first_match(hidden)
    assert info.value.length == len(normalize(hidden)) > MAX_NORMALIZED_LENGTH
    assert "too long" in str(info.value) and isinstance(info.value, ValueError)
    assert matcher.first_match("forbidden " * 200) is FORBIDDEN  # a long ordinary prompt is checked whole


def test_a_full_regex_budget_stays_bounded_against_hostile_prompts():
    # The costliest lists we found within the budget: NFA-heavy counted repeats, DFA-thrashing small patterns;
    # against 4000 characters, and a prompt read four ways (a Greek capital, then a spelled-out run).
    rng = random.Random(7)
    prompts = {
        "ab": "".join(rng.choices("ab", k=4000)),
        "cjk": "".join(rng.choices("\u4e00\u4e01", k=4000)),
        "four readings": "\u0397 " + "".join(rng.choices(["a ", "b "], k=1999)),
    }
    lists = {
        "counted repeats": [r"(?:.*.{30}){6}x", r"(?:.*.{30}){1}x", r"(?:.*.{10}){2}x"],
        "many small": [rf"[ab]*a[ab]{{60}}x{i}" for i in range(20)],  # 20 x 98.5 instructions
    }
    for name, patterns in lists.items():
        matcher = TermMatcher([make_term(p, regex=True) for p in patterns])
        for kind, prompt in prompts.items():
            assert best_ms(partial(matcher.first_match, prompt), f"regex budget full ({name}), {kind}") < 2 * BOUND_MS
