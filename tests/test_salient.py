"""The rule-based `salient` query finder: spans of a question and the token mask over a prompt."""

from __future__ import annotations

import pytest

from duet_cli.methods.pyramiddrop.salient import STOPWORDS, WH_WORDS, salient_spans, salient_token_mask


def _words(text: str) -> list[str]:
    return [text[s:e] for s, e in salient_spans(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "What is the color of the dog's collar? Answer the question using a single word or phrase.",
            ["What", "color", "dog", "collar", "?"],
        ),
        ("Is there a red car in the picture? Please answer yes or no.", ["red", "car", "?"]),
        (
            "How many people: adults, children!",
            ["How", "many", "people", ":", "adults", "children", "!"],
        ),
        ("Which year, 1999 or 2001?", ["Which", "year", "1999", "2001", "?"]),
        ("THE Dog; the DOG.", ["Dog", "DOG"]),  # case-insensitive; ; and . are not salient
        ("whose hat? whom did she see? why, when, where... who!", None),
        ("", []),
        ("the a an of", []),
    ],
)
def test_salient_spans(text: str, expected: list[str] | None) -> None:
    words = _words(text)
    if expected is None:  # every wh-word is salient, even the rare ones
        assert {w.lower() for w in words} >= {"whose", "whom", "why", "when", "where", "who"}
    else:
        assert words == expected


def test_spans_are_exact_character_offsets() -> None:
    text = "What colour is the cat?"
    # What = 0..4, colour = 5..11, cat = 19..22, ? = 22..23
    assert salient_spans(text) == [(0, 4), (5, 11), (19, 22), (22, 23)]


def test_word_lists() -> None:
    assert frozenset({"what", "which", "who", "whom", "whose", "where", "when", "why", "how"}) == WH_WORDS
    assert not WH_WORDS & STOPWORDS
    assert all(w == w.lower() and w.isalnum() for w in STOPWORDS)
    for w in (
        "the",
        "is",
        "are",
        "image",
        "picture",
        "photo",
        "shown",
        "please",
        "answer",
        "question",
        "single",
    ):
        assert w in STOPWORDS
    assert 120 <= len(STOPWORDS) <= 250


def test_deterministic() -> None:
    text = "Where is the man with the red umbrella standing, and why?"
    first = salient_spans(text)
    assert all(salient_spans(text) == first for _ in range(5))
    offsets = [(0, 0), (0, 5), (5, 8), (8, 12), (12, 16)]
    assert salient_token_mask(offsets, first) == salient_token_mask(offsets, first)


# A LLaVA-style prompt tokenized by hand, as a fast tokenizer reports offsets (leading space included):
PROMPT = "USER: <image>\nWhat color is the cat? ASSISTANT:"
QUESTION_BASE = len("USER: <image>\n")  # 14
OFFSETS = [
    (0, 0),  # <s>         special: never salient
    (0, 4),  # USER
    (4, 5),  # :           a colon, but outside the question
    (6, 13),  # <image>
    (13, 14),  # \n
    (14, 18),  # What       wh-word
    (18, 24),  # " color"   overlaps color = 19..24
    (24, 27),  # " is"
    (27, 31),  # " the"
    (31, 33),  # " c"       first half of cat = 32..35
    (33, 35),  # at
    (35, 36),  # ?
    (36, 40),  # " ASS"
    (40, 43),  # IST
    (43, 46),  # ANT
    (46, 47),  # :          after the question
]


def test_token_mask_on_a_prompt() -> None:
    question = PROMPT[QUESTION_BASE : PROMPT.index("?") + 1]
    assert question == "What color is the cat?"
    spans = salient_spans(question)
    mask = salient_token_mask(OFFSETS, spans, base=QUESTION_BASE)
    salient = [PROMPT[s:e] for (s, e), m in zip(OFFSETS, mask, strict=True) if m]
    assert salient == ["What", " color", " c", "at", "?"]
    assert len(mask) == len(OFFSETS)


def test_special_tokens_never_salient() -> None:
    # A question at the very start of the prompt: (0, 0) tokens overlap nothing, even a span at 0.
    spans = salient_spans("Why?")  # (0, 3), (3, 4)
    offsets = [(0, 0), (0, 3), (3, 4), (0, 0), (4, 4)]
    assert salient_token_mask(offsets, spans) == [False, True, True, False, False]


def test_token_mask_edges() -> None:
    # Touching is not overlapping: a token ending where a span starts is not salient.
    assert salient_token_mask([(5, 10), (10, 12), (12, 20)], [(0, 2)], base=10) == [False, True, False]
    assert salient_token_mask([(1, 3), (3, 5)], []) == [False, False]
    assert salient_token_mask([], [(0, 1)]) == []
    # Overlapping or unsorted spans from another source still work.
    assert salient_token_mask([(0, 2), (2, 4), (8, 9)], [(3, 6), (1, 2), (5, 7)]) == [True, True, False]
