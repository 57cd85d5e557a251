"""Degenerate solutions: outputs that are not a complete solution with a stated final answer.

Three kinds, checked in this order (the first that applies is returned):

- ``truncated``: generation stopped at the token limit (``finish_reason == "length"``), whatever the text
  says: a number near the end of a cut output is not a final answer;
- ``looping``: the text repeats itself: a line or sentence of at least 12 characters that occurs three
  times or more, repeated lines making up a quarter or more of at least 8 lines, or, for texts of 40+
  words, more than half of the word 6-grams occurring before (``repeated_ngram_share``);
- ``no_answer``: no explicit final answer (``\\boxed{}``, ``#### n``, "The answer is …", …; the verifier's
  :func:`verifier.answers.answer_candidates`).

The verify stage marks such samples (``Verdict.degenerate``) and never calls them correct; the pairs stage
never chooses them and uses them as negatives only when ``pairs.negatives`` lists ``degenerate``::

    >>> degeneracy("3 + 4 = 7. The answer is \\\\boxed{7}.", "stop") is None
    True
    >>> degeneracy("3 + 4 = 7. So the", "length")
    'truncated'
"""

from __future__ import annotations

import re
from collections import Counter

from verifier.answers import answer_candidates

NGRAM = 6
MIN_LINE_CHARS = 12


def repeated_ngram_share(text: str, n: int = NGRAM) -> float:
    """Share of the word ``n``-grams of ``text`` that already occurred earlier in it (0 for short texts)."""
    words = text.split()
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    seen: set[tuple[str, ...]] = set()
    repeats = 0
    for g in grams:
        if g in seen:
            repeats += 1
        else:
            seen.add(g)
    return repeats / len(grams)


def _units(text: str) -> list[str]:
    """Lines, and sentences within long lines, lower-cased with spaces collapsed."""
    out = []
    for line in text.splitlines():
        for part in re.split(r"(?<=[.!?])\s+", line):
            key = re.sub(r"\s+", " ", part.lower()).strip()
            if key:
                out.append(key)
    return out


def is_looping(text: str) -> bool:
    """Whether ``text`` repeats itself (rules in the module docstring)."""
    units = [u for u in _units(text) if len(u) >= MIN_LINE_CHARS]
    counts = Counter(units)
    if counts and max(counts.values()) >= 3:
        return True
    lines = [ln for ln in text.splitlines() if ln.strip()]
    dup_lines = len(lines) - len({re.sub(r"\s+", " ", ln.lower()).strip() for ln in lines})
    if len(lines) >= 8 and dup_lines >= 0.25 * len(lines):
        return True
    return len(text.split()) >= 40 and repeated_ngram_share(text) > 0.5


def degeneracy(text: str, finish_reason: str | None = None) -> str | None:
    """``truncated``, ``looping``, ``no_answer`` or None for a complete solution with a stated answer."""
    if finish_reason == "length":
        return "truncated"
    if not isinstance(text, str) or not text.strip():
        return "no_answer"
    if is_looping(text):
        return "looping"
    if not answer_candidates(text):
        return "no_answer"
    return None
