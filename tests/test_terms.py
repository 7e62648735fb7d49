"""Blocked terms: normalisation tricks are caught, ordinary prompts are not, and bad terms are refused."""

from __future__ import annotations

import logging

import pytest

from bot.moderation.terms import BlockedTerm, InvalidTermError, TermMatcher, compile_term, make_term, normalize

PORN = BlockedTerm("porn")


def blocked(prompt: str, *terms: BlockedTerm) -> BlockedTerm | None:
    return TermMatcher(terms or (PORN,)).first_match(prompt)


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
        ("p@$$word", "password"),
        ("  a \t\n b\u00a0\u00a0c  ", "a b c"),
        ("a 4k photo from the 1920s", "a 4k photo from the 1920s"),  # digits are left alone
    ],
)
def test_normalize(text, expected):
    assert normalize(text) == expected


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
    ("pattern", "prompt", "hit"),
    [
        (r"p[o0]rns?", "P0RNS", True),
        (r"p[o0]rns?", "\u0440\u043e\u0433n", True),  # runs on the normalised prompt
        (r"B[O0]+BS?", "big boobs", True),  # re.IGNORECASE: upper-case pattern, lower-case prompt
        (r"B[O0]+BS?", "bobsled", True),  # a regex has no implicit word boundaries
        (r"\bb[o0]+bs?\b", "bobsled", False),
        (r"nsfw", "n s f w please", True),  # also searched in the collapsed prompt
        (r"^draw", "please draw a cat", False),
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


def test_an_empty_matcher_blocks_nothing():
    assert TermMatcher([]).first_match("porn") is None


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
        ("p[o0rn", True, "doesn't compile: unterminated character set"),
        ("a{99999999999}", True, "doesn't compile"),
        ("a*", True, "matches empty text"),
        ("porn|", True, "matches empty text"),
        (r"\b", True, "matches empty text"),
        ("(?=x)", True, "matches empty text"),
    ],
)
def test_make_term_refuses_unusable_terms(text, regex, says):
    with pytest.raises(InvalidTermError) as info:
        make_term(text, regex=regex)
    assert says in str(info.value)
    assert isinstance(info.value, ValueError)


def test_compile_term_raises_for_a_bad_stored_term():
    with pytest.raises(InvalidTermError):
        compile_term(BlockedTerm("(unclosed", regex=True))
    assert compile_term(BlockedTerm("(closed)", regex=True)).search("CLOSED") is not None


def test_a_matcher_skips_a_stored_term_that_no_longer_compiles(caplog):
    good = BlockedTerm("porn")
    with caplog.at_level(logging.WARNING, logger="bot.moderation.terms"):
        matcher = TermMatcher([BlockedTerm("(unclosed", regex=True), BlockedTerm(""), good])
    assert matcher.first_match("(unclosed porn") is good
    assert matcher.first_match("(unclosed") is None
    assert "(unclosed" in caplog.text
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2
