"""The rule-based `salient` query rows for stage 2: content words of the question (DESIGN.md section 5).

Deterministic and offline: wh-words, the marks ? ! :, and every word outside a built-in stopword list.
"""

from __future__ import annotations

import bisect
import re

WH_WORDS: frozenset[str] = frozenset({"what", "which", "who", "whom", "whose", "where", "when", "why", "how"})

_STOPWORD_GROUPS = (
    # articles, determiners, quantifiers
    "a an the this that these those some any each every all both few more most other such no nor not only"
    " own same another either neither",
    # pronouns
    "i me my mine myself we us our ours ourselves you your yours yourself yourselves he him his himself"
    " she her hers herself it its itself they them their theirs themselves one ones",
    # auxiliaries and modals
    "am is are was were be been being have has had having do does did doing will would shall should"
    " can could may might must",
    # pieces of contractions, as the word pattern splits them (what's -> what, s)
    "s t d ll m re ve don doesn didn isn aren wasn weren hasn haven hadn wouldn shouldn couldn",
    # prepositions
    "of at by for with about against between into through during before after above below to from up"
    " down in out on off over under onto upon within without across along around near",
    # conjunctions and adverbs with little content
    "and but if or because as until while so than too very just then there here once again further also"
    " now whether",
    # prompt boilerplate: the parts of benchmark instructions that say nothing about the image
    "image images picture pictures photo photos photograph shown show shows depicted please answer"
    " answers question questions single word words phrase using use based given following option options"
    " letter choice choices directly briefly brief yes",
)
STOPWORDS: frozenset[str] = frozenset(word for group in _STOPWORD_GROUPS for word in group.split())

_TOKEN = re.compile(r"[^\W_]+|[?!:]")


def salient_spans(text: str) -> list[tuple[int, int]]:
    """Character spans (start, end) of the salient parts of `text`, in order.

    Salient: wh-words, the marks ? ! :, and words (runs of letters/digits) not in STOPWORDS,
    compared case-insensitively.
    """
    spans = []
    for match in _TOKEN.finditer(text):
        word = match.group().lower()
        if word in WH_WORDS or word not in STOPWORDS:
            spans.append(match.span())
    return spans


def salient_token_mask(
    offsets: list[tuple[int, int]], spans: list[tuple[int, int]], base: int = 0
) -> list[bool]:
    """Which tokens of a prompt overlap a salient span.

    offsets: a fast tokenizer's (start, end) character offsets for every prompt token; spans: from
    `salient_spans` on a question that starts at character `base` of the prompt. Tokens with (0, 0)
    offsets (special tokens) are never salient. The caller adds the last prompt token itself.
    """
    # Merge overlapping spans so that both starts and ends are sorted and one bisect finds the match.
    shifted: list[tuple[int, int]] = []
    for s, e in sorted((s + base, e + base) for s, e in spans if e > s):
        if shifted and s <= shifted[-1][1]:
            shifted[-1] = (shifted[-1][0], max(shifted[-1][1], e))
        else:
            shifted.append((s, e))
    ends = [e for _, e in shifted]
    mask = []
    for start, end in offsets:
        if (start, end) == (0, 0) or end <= start:
            mask.append(False)
            continue
        i = bisect.bisect_right(ends, start)  # first span ending after this token starts
        mask.append(i < len(shifted) and shifted[i][0] < end)
    return mask
