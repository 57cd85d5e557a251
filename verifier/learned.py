"""Learned step scorer: the verifier's second channel, a logistic regression on per-step features.

Fitted by ``scripts/fit_step_scorer.py`` on PRM800K phase-1 *train* (``phase1_train_plus``: MATH train
problems only; phase1_test is never used for fitting or tuning). Label: a step rated ``-1`` by the human
labeller is *bad* (1); ``0`` and ``+1`` are *not bad* (0).

Features of step ``i`` (:func:`step_features`), computed from the symbolic channel's analysis of the steps
``0..i`` and the text of step ``i`` alone:

- dense (:data:`DENSE`): calculations checked / wrong in the step (arithmetic and algebra separately),
  the verifier's flags on the step (operand used before derived, operand with no source, final answer
  vs last derived value, structure, off-topic), numbers in the step and numbers new to the solution,
  LaTeX, ``=`` signs, whether the step states a final answer and whether it matches the gold answer,
  position (``log1p(i)``, first step, and buckets of the index: 1, 2, 3-4, 5-7, 8-12, 13-20, 21+), length,
  hedging words ("wait", "I think", "mistake", ...), word overlap with the question and with the earlier
  steps, and whether the step writes the gold answer's value anywhere (:func:`mentions_gold`: a solution
  that reaches the gold value along the way is usually on track);
- hashed word unigrams and bigrams of the step (numbers folded to their digit count, LaTeX commands and
  operators kept), :data:`N_HASH` buckets by ``zlib.crc32`` (stable across processes and machines).

The model file (``verifier/models/step_scorer-v5.json``) is plain JSON: the feature spec (names, hash
size, version), the standardisation of the dense features, the coefficients, the intercept and the
decision threshold chosen on train. It is read with :func:`json.load` only (no pickle), and checked
against the feature spec of this module before use.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

from verifier.answers import (
    answer_candidates,
    answers_equal,
    extract_answer,
    normalize_answer,
    numbers_equal,
    parse_number,
)
from verifier.arith import Calculation, split_math
from verifier.semantic import cached_numbers

FEATURE_VERSION = 3  # 2: + mentions_gold; 3: + position buckets
N_HASH = 1 << 14
MODEL_DIR = Path(__file__).resolve().parent / "models"
SCORER_VERSION = "step_scorer-v5"  # the shipped model; scripts/fit_step_scorer.py writes it under this name
DEFAULT_MODEL = MODEL_DIR / f"{SCORER_VERSION}.json"

HEDGES = ("wait", "i think", "mistake", "actually", "oops", "hmm", "not sure", "maybe", "guess", "wrong",
          "let me", "i mean", "sorry", "hold on", "no,", "that's not", "we made", "incorrect", "perhaps",
          "probably", "seems", "try again", "redo", "instead", "oh")
_HEDGE_RE = re.compile(r"\b(?:" + "|".join(re.escape(h) for h in HEDGES) + r")(?![a-z])")
_TOKEN_RE = re.compile(r"\\[A-Za-z]+|[A-Za-z]+|\d+(?:\.\d+)?|[=+\-*/^()<>!]")
_WORDS_RE = re.compile(r"[a-z]{3,}")

DENSE = (
    "calc_checked", "calc_wrong", "calc_wrong_any", "alg_checked", "alg_wrong", "flag_ordering",
    "flag_unsupported", "flag_underived", "flag_final_vs_derived", "flag_structure", "flag_off_topic",
    "max_flag_severity", "n_numbers", "n_new_numbers", "has_latex", "n_equals", "states_answer",
    "answer_wrong", "answer_right", "position", "is_first", "n_chars", "n_words", "n_hedges",
    "question_overlap", "prefix_overlap", "n_prefix_chars", "n_question_chars", "has_question_mark",
    "mentions_gold", "pos_1", "pos_2", "pos_3_4", "pos_5_7", "pos_8_12", "pos_13_20", "pos_21_up",
)
# the step's index in buckets (is_first is index 0): P(bad) does not grow with log1p(index) alone
_POS_EDGES = (1, 2, 3, 5, 8, 13, 21)


_NUM_TOKENS = tuple(f"<n{min(k, 6)}>" for k in range(7))  # a number folded to its digit count


def _tokens(step: str) -> list[str]:
    return [_NUM_TOKENS[min(len(t), 6)] if t[0].isdigit() else t.lower() for t in _TOKEN_RE.findall(step[:4000])]


@lru_cache(maxsize=8192)
def _token_crcs(tok: str) -> tuple[int, int, bytes]:
    """``crc32(tok)``, ``crc32(tok + " ")`` (a bigram's running CRC after its first token) and ``tok`` in UTF-8."""
    b = tok.encode("utf-8")
    return zlib.crc32(b), zlib.crc32(b" ", zlib.crc32(b)), b


def hashed_indices(step: str) -> list[int]:
    """Bucket indices of the step's word unigrams and bigrams ``"a b"`` (distinct, sorted): ``crc32`` of the
    gram's UTF-8 bytes modulo :data:`N_HASH`, a bigram's CRC continued from its first token's."""
    crcs = [_token_crcs(t) for t in _tokens(step)]
    out = {c % N_HASH for c, _, _ in crcs}
    crc = zlib.crc32
    out.update([crc(b[2], a[1]) % N_HASH for a, b in zip(crcs, crcs[1:], strict=False)])
    return sorted(out)


_MATH_NOISE_RE = re.compile(r"\\left|\\right|\\[,!;:> ]|(?<=\\)[dt](?=frac)|\$|(?<=\d),(?=\d{3}(?!\d))")
_SPACE_AROUND_RE = re.compile(r" (?=[^\w ])|(?<=[^\w ]) ")
_GOLD_CAP = 60  # a longer gold answer (an expression, a list) is too specific to be written the same way
# not inside a longer value: a digit, name, decimal point, subscript, power, sign or operator before; a name,
# command, power, argument, factorial, operator or more decimals after; not a numerator or a denominator
# (zero-width patterns, matched at the gold's start and end: compiled once, not once per gold answer)
_BEFORE = re.compile(r"(?<![\w.^_/+*-])(?<!frac\{)(?<!\}\{)(?<!sqrt\{)(?<!\^\{)(?<!_\{)")
_BEFORE_SYMBOL = re.compile(r"(?<![\d.^_/+*-])")  # a gold that starts with a symbol (\\sqrt, a tuple): prose may touch it
_AFTER = re.compile(r"(?![\w\\^_{(/!+*-])(?!\.\d)(?!\}\{)")
_AFTER_SYMBOL = re.compile(r"(?![\d\\^_{(/!+*-])(?!\}\{)")  # a gold that ends with a symbol (``}``, ``)``)


@lru_cache(maxsize=4096)
def _norm_math(text: str) -> str:
    """Text with ``$``, ``\\left``/``\\right``, thin spaces, ``\\dfrac``/``\\tfrac`` and thousands commas
    removed, and no space next to a symbol, so that one value is written one way (``\\dfrac{3}{4}`` and
    ``\\frac{3}{4}``, ``1,000`` and ``1000``, ``(2, 3)`` and ``(2,3)``); words keep one space between them."""
    if "\\" in text or "$" in text or "," in text:
        text = _MATH_NOISE_RE.sub("", text)
    text = " ".join(text.split())
    return _SPACE_AROUND_RE.sub("", text) if " " in text else text


_ALNUM_RUN_RE = re.compile(r"[A-Za-z0-9]+")


@lru_cache(maxsize=1024)
def _gold_probe(gold: str) -> tuple[str, re.Pattern, re.Pattern, Fraction | None, str] | None:
    """How to find ``gold`` in a step: its normalised text and the patterns that must hold at its start and
    end for a whole value (``12`` is not in ``120``, ``x_{12}``, ``12.5``, ``-12`` or ``\\frac{12}{5}``), its
    value when it is a positive non-integer number (a decimal ``0.75`` in the step is the gold
    ``\\frac{3}{4}``), and a piece of text that every step writing it holds (the last three characters of its
    last run of letters or digits: ``000`` of ``1000``, which ``1,000`` holds too)."""
    g = _norm_math(extract_answer(gold) or gold).rstrip(".")
    if not g or len(g) > _GOLD_CAP:
        return None
    num = parse_number(gold)
    value = num[0] if num and not num[1] and isinstance(num[0], Fraction) and num[0] > 0 and \
        num[0].denominator != 1 else None
    before = _BEFORE if g[0].isalnum() or g[0] in "-." else _BEFORE_SYMBOL
    after = _AFTER if g[-1].isalnum() else _AFTER_SYMBOL
    runs = _ALNUM_RUN_RE.findall(g)
    return g, before, after, value, runs[-1][-3:] if runs else ""


def mentions_gold(gold: str, step: str) -> bool:
    """The step writes the gold answer (as a whole value, not as a piece of a longer one), stated as a final
    answer or not: a solution that reaches the gold value along the way is usually on track."""
    if not gold:
        return False
    probe = _gold_probe(gold)
    if probe is None:
        return False
    g, before, after, value, needle = probe
    if needle in step:
        text = _norm_math(step[:4000])
        i = text.find(g)
        while i >= 0:
            if before.match(text, i) and after.match(text, i + len(g)):
                return True
            i = text.find(g, i + 1)
    return value is not None and any(x == value for x in cached_numbers(step))


def _cheap_equal(gold: str, ans: str | None) -> bool:
    """Normalised string or number equality (no math-verify): for intermediate answer-like steps."""
    g = extract_answer(gold)
    if ans is None or g is None:
        return False
    a, b = parse_number(ans), parse_number(g)
    if a is not None and b is not None:
        return numbers_equal(a, b)
    return normalize_answer(ans) == normalize_answer(g)


@lru_cache(maxsize=1024)
def _question_info(question: str) -> tuple[frozenset[str], frozenset]:
    """The question's words and numbers (cached: the samples of one problem share the question)."""
    return frozenset(_words(question)), frozenset(cached_numbers(question))


def _words(text: str) -> set[str]:
    return set(_WORDS_RE.findall(text.lower()))


def _position_buckets(i: int) -> tuple[float, ...]:
    """One-hot of the step index over [1, 2), [2, 3), [3, 5), [5, 8), [8, 13), [13, 21), [21, ...): zeros for 0."""
    return _BUCKET_ROWS[min(i, _POS_EDGES[-1])]


_BUCKET_ROWS = tuple(tuple(float(lo <= i < hi) for lo, hi in zip(_POS_EDGES, (*_POS_EDGES[1:], math.inf), strict=True))
                     for i in range(_POS_EDGES[-1] + 1))


def step_features(question: str, steps: Sequence[str], calcs: Sequence[Sequence[Calculation]], flags,
                  gold: str = "", only: Sequence[int] | None = None,
                  known: dict[str, bool] | None = None) -> list[tuple[list[float], list[int]]]:
    """(dense, hashed) features for each step (or the steps in ``only``); ``flags`` are ``StepFlag``s.
    ``known`` maps answers already compared with ``gold`` to the outcome (the solution's final answer)."""
    per_step: dict[int, list] = {}
    for f in flags:
        per_step.setdefault(f.step, []).append(f)
    q_words, q_nums = _question_info(question)
    seen_nums: set = set(q_nums)
    seen_words: set[str] = set()
    prefix_chars = 0
    out = []
    want = set(range(len(steps))) if only is None else set(only)
    for i, step in enumerate(steps):
        nums = cached_numbers(step)
        words = _words(step)
        if i in want:
            cs = calcs[i] if i < len(calcs) else []
            ar = [c for c in cs if c.ok is not None and not c.algebraic]
            al = [c for c in cs if c.ok is not None and c.algebraic]
            fl = per_step.get(i, [])
            notes = [f.note for f in fl]
            cands = answer_candidates(step)
            right = wrong = 0.0
            if cands and gold:
                if known is None:
                    ok = answers_equal(gold, step)
                else:  # the final answer's outcome is known; others get the cheap normalised comparison
                    ans = extract_answer(step)
                    ok = known[ans] if ans in known else _cheap_equal(gold, ans)
                right, wrong = float(ok), float(not ok)
            low = step.lower()
            dense = [
                math.log1p(len(ar)), math.log1p(sum(c.ok is False for c in ar)),
                float(any(c.ok is False for c in ar)), math.log1p(len(al)),
                math.log1p(sum(c.ok is False for c in al)),
                float(any(f.dim == "step_ordering" for f in fl)),
                float(any("neither given nor derived" in n for n in notes)),
                float(any("reference derives" in n for n in notes)),
                float(any("final answer" in n for n in notes)),
                float(any(f.dim == "structural_integrity" for f in fl)),
                float(any(f.dim == "semantic_alignment" for f in fl)),
                max((f.severity for f in fl), default=0.0),
                math.log1p(len(nums)), math.log1p(len(set(nums) - seen_nums)),
                float(any(m for _, m in split_math(step[:4000]))), math.log1p(step.count("=")),
                float(bool(cands)), wrong, right, math.log1p(i), float(i == 0),
                math.log1p(len(step)), math.log1p(len(words)), math.log1p(len(_HEDGE_RE.findall(low))),
                len(words & q_words) / len(words) if words else 0.0,
                len(words & seen_words) / len(words) if words else 0.0,
                math.log1p(prefix_chars), math.log1p(len(question)), float("?" in step),
                float(mentions_gold(gold, step)),
                *_position_buckets(i),
            ]
            out.append((dense, hashed_indices(step)))
        seen_nums.update(nums)
        seen_words |= words
        prefix_chars += len(step)
    return out


@dataclass
class StepScorer:
    """A fitted logistic regression over :func:`step_features`; ``threshold`` rejects a step."""

    version: str
    mean: list[float]
    scale: list[float]
    dense_coef: list[float]
    hash_coef: list[float]
    intercept: float
    threshold: float
    meta: dict

    @classmethod
    def from_dict(cls, d: dict) -> StepScorer:
        spec = d.get("feature_spec", {})
        if spec.get("dense") != list(DENSE) or spec.get("n_hash") != N_HASH or \
                spec.get("feature_version") != FEATURE_VERSION:
            raise ValueError("step scorer file does not match this verifier's feature spec")
        n = len(DENSE)
        s = cls(version=str(d["version"]), mean=[float(x) for x in d["mean"]],
                scale=[float(x) or 1.0 for x in d["scale"]], dense_coef=[float(x) for x in d["dense_coef"]],
                hash_coef=[float(x) for x in d["hash_coef"]], intercept=float(d["intercept"]),
                threshold=float(d["threshold"]), meta=dict(d.get("meta", {})))
        if not (len(s.mean) == len(s.scale) == len(s.dense_coef) == n and len(s.hash_coef) == N_HASH):
            raise ValueError("step scorer file has coefficient arrays of the wrong size")
        return s

    @classmethod
    def load(cls, path: str | Path) -> StepScorer:
        with Path(path).open(encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    def logit(self, dense: Sequence[float], hashed: Sequence[int]) -> float:
        z = self.intercept
        for x, m, s, w in zip(dense, self.mean, self.scale, self.dense_coef, strict=True):
            z += w * (x - m) / s
        hc = self.hash_coef
        return sum([hc[j] for j in hashed], z)  # the same left-to-right additions as a loop

    def prob(self, dense: Sequence[float], hashed: Sequence[int]) -> float:
        z = max(-40.0, min(40.0, self.logit(dense, hashed)))
        return 1.0 / (1.0 + math.exp(-z))

    def step_probs(self, question: str, steps, calcs, flags, gold: str = "",
                   known: dict[str, bool] | None = None) -> list[float]:
        return [round(self.prob(d, h), 6) for d, h in step_features(question, steps, calcs, flags, gold,
                                                                     known=known)]


@lru_cache(maxsize=8)
def _load_cached(path: str) -> StepScorer:
    return StepScorer.load(path)


def load_scorer(spec: str | None) -> tuple[StepScorer | None, str | None]:
    """(scorer, note): ``spec`` None/"none"/"off" = disabled; "auto" = the shipped model; else a path.

    Never raises: a missing or invalid file gives ``(None, note)`` and the verifier runs symbolic only."""
    if spec is None or str(spec).lower() in ("none", "off", "false", ""):
        return None, None
    path = DEFAULT_MODEL if spec == "auto" else Path(spec)
    try:
        return _load_cached(str(path)), None
    except FileNotFoundError:
        return None, f"learned step scorer not found ({path.name}): symbolic channel only"
    except Exception as exc:  # noqa: BLE001 - a bad file must not break the verifier
        return None, f"learned step scorer unusable ({type(exc).__name__}: {str(exc)[:80]}): symbolic channel only"


__all__ = ["DEFAULT_MODEL", "DENSE", "SCORER_VERSION", "FEATURE_VERSION", "N_HASH", "StepScorer", "hashed_indices", "load_scorer",
           "mentions_gold", "step_features"]
