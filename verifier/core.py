"""MathVerifier: the six error dimensions of a solution, their aggregation and the first wrong step.

Dimensions (each in [0, 1], 1 = fully erroneous):

- ``symbolic_validity``: wrong calculations. ``0`` when every checked calculation holds, else
  ``0.5 + 0.5 * wrong / checked``.
- ``step_ordering``: operands used before the step that derives them, even when a sentence stated them
  earlier (``0.6`` for the first such step, ``+0.2`` for each further one). Only numbers the question
  gives (also as ``a/b``, ``p%`` and ``1 ± p%``) and :func:`implicit_constants` (0, 1, 2, 1/2 and the
  conversion factors of units the text names: "hours" -> 60) are exempt.
- ``logical_consistency``: the final answer contradicts the last derived value (``1.0``; ``0.4`` when it
  equals an earlier intermediate value; a rounding the text asks for and dollars-as-cents are fine),
  conflicting final answers (``1.0``), operands that are neither given, nor derived, nor stated, nor
  implicit, nor small counts <= 12 (``0.3`` per step, at most ``0.6``); with a reference solution,
  operands that the reference derives but this solution never derives (a skipped step: ``0.6``, ``+0.2``
  per further step).
- ``structural_integrity``: empty (``1``), no explicit final answer (``0.5``), truncated (``0.8``),
  repetitive (``0.7``), unbalanced brackets/braces/``$`` (``0.4``); the largest flag plus ``0.1`` per extra flag.
- ``semantic_alignment``: :func:`verifier.semantic.alignment`.
- ``answer_correctness``: ``0`` when :func:`verifier.answers.answers_equal` (gold, solution) holds, else ``1``.

Aggregation (coefficients from ``VerifyConfig.wrongness`` / ``VerifyConfig.absurdity``; docs/verifier.md
says where each comes from and how they were validated on PRM800K train)::

    wrongness = Σ_d w_d · dims[d] / Σ_d w_d        absurdity = Σ_d a_d · dims[d] / Σ_d a_d

Learned channel (:mod:`verifier.learned`, ``VerifyConfig.step_scorer``): a logistic regression fitted on
PRM800K phase-1 train (``scripts/fit_step_scorer.py``) gives every step P(bad) from symbolic-channel and text
features (``Analysis.step_probs``; the quality report's step score is the larger of it and the flag
severity). It does not enter the six dimensions. When the model file is missing the verifier runs the
symbolic channel alone and says so in the notes.

First erroneous step: the earliest of (a) a wrong calculation or algebra step (``symbolic_validity``) or an
operand used before it is derived (``step_ordering``), (b) for an incorrect solution with a reference, the
first step of the final answer's derivation that reaches a value the reference never does, and (c) the
first step whose P(bad) is above the threshold (``VerifyConfig.step_threshold``, default the model
file's, chosen on PRM800K train); else the weaker flags (logical consistency, unbalanced brackets); else,
for a solution that a gold answer shows incorrect, the step where its wrong final value first appears
(without a gold answer nothing says the solution is wrong: no step is named).

Semantic alignment uses the embedding model (``VerifyConfig.embedding_model``, default ``"auto"``: the
packaged all-MiniLM-L6-v2 when installed) only where the lexical measures see a mismatch; in
:meth:`MathVerifier.score_batch` the workers run lexically and the parent embeds those solutions in one
batch. ``VERIFIER_VERSION`` names what a verdict holds.

Example::

    >>> v = MathVerifier().score("Natalia sold 48 clips in April and half as many in May. How many in all?",
    ...                          "She sold 48/2 = 24 clips in May.\\nShe sold 48+24 = 70 clips.\\n#### 70", "72")
    >>> v.correct, v.first_error_step, v.dims["symbolic_validity"]
    (False, 1, 0.75)
"""

from __future__ import annotations

import math
import re
import signal
import threading
import time
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache

from conf.schema import VerifyConfig
from verifier.answers import (
    answer_candidates,
    answers_equal,
    end_of_output,
    extract_answer,
    normalize_answer,
    numbers_equal,
    parse_number,
)
from verifier.arith import (
    ANNOTATION,
    Calculation,
    Value,
    extract_calculations,
    fmt_huge,
    numbers_in,
    split_math,
    to_float,
    values_match,
)
from verifier.learned import StepScorer, load_scorer
from verifier.semantic import STOPWORDS, Alignment, Embedder, alignment, word_numbers
from verifier.semantic import similarity as lexical_similarity
from verifier.steps import split_steps
from verifier.symbolic import check_algebra
from verifier.verdict import DIMENSIONS, Verdict

# bump when what a verdict holds changes (dimensions, first_error_step rules, the learned model);
# 1: the symbolic channel alone; 2: + the learned step scorer (step_scorer-v1) and embedding alignment;
# 3: step_scorer-v2, a right answer's first error from the surest evidence only, the reference's values only
# from a stepwise (GSM8K-style) reference, step scores = the learned probability (docs/verifier.md);
# 4: checks across steps (stated values vs earlier equations, derived equations keep a root, continued
# expressions), equalities said in words, another route back onto the reference, step_scorer-v3;
# 5: answer equivalence reads a tuple against equations (``(2,3)`` and ``x=2, y=3``), complex numbers in ``i``
# and repeating decimals; "Step 3:" labels are taken off the steps; "increase by 12000-4000 = 8000" is checked
# 6: answers with powers too big to evaluate are compared as written (``2^{2010}+1`` = ``1+2^{2010}``), numbers
# up to 100,000 bits are evaluated; an answer in a display below "The answer is" / an "Answer" heading is read
# from it; "#### Final Answer" is a heading; <answer> tags, </think>, chat-end tokens and new turns; a matrix
# with a unit, \pm lists, degrees in trig answers, numbers in words, random-point equality of expressions;
# ratios, times and unknown functions are no calculations; a continuation may use a stated equation
# 7: currency signs around an operator ("$36/$3", "¢275/¢25") are no math span; thousands grouped with spaces;
# a prose left side told partly in words (a lone number that does not hold, a sign after words) is not read as
# the whole left side; "hours = minutes" conversions and leading-zero times are no calculations; a value used
# before a later step derives it as another quantity ("4 friends", then "3 + 1 = 4 donuts") is no ordering error;
# "= ... \pmod{n}" is a congruence; a mixed number before a factor (2\frac{1}{4}\pi) is read as one number;
# unit words between an operand and an operator are bridged up to three words (was two)
# 8: an answer marker written inside a text group ("$$\text{Answer: } 18$$", "\textbf{Final Answer:} 18") gives
# the answer without the group's closing brace and the display's closing delimiter (was "} 18$$")
# 9: algebra in plain text, unicode numbers, a fraction "of" a quantity, mixed numbers before "*"
# 10: exact values beyond the float range (3^{2002}) are compared, not an error verdict; the unit-tail regex no
# longer backtracks for seconds on prose after "answer" (was a timeout verdict); otherwise the same verdicts, faster
# 11: step_scorer-v4, whose features add whether a step writes the gold answer's value (mentions_gold)
# 12: step_scorer-v5, whose features add the step index in buckets (1, 2, 3-4, 5-7, 8-12, 13-20, 21+)
VERIFIER_VERSION = 12  # a plain number: the verify stage logs it as an MLflow metric

# numbers a solution may use without a source: 0, 1, 2 (halves, doubles, pairs) and 1/2
ALWAYS_IMPLICIT = frozenset(Fraction(x) for x in (0, 1, 2, Fraction(1, 2)))
# conversion factors, allowed when a word of the question or the solution names their unit
_UNITS: tuple[tuple[str, tuple], ...] = (
    ("week weeks weekly", (7, 52)), ("day days daily", (24, 7, 365, 30, 31)),
    ("hour hours hourly", (60, 24, 3600)), ("minute minutes", (60,)), ("second seconds", (60, 3600)),
    ("month months monthly", (12, 30, 31, 28, 4)), ("year years yearly annual annually", (12, 365, 52, 366)),
    ("decade decades", (10,)), ("century centuries", (100,)), ("dozen dozens", (12,)), ("score", (20,)),
    ("gross", (144,)), ("percent percentage percentages", (100,)),
    ("cent cents penny pennies dollar dollars", (100,)), ("dime dimes", (10,)), ("nickel nickels", (5,)),
    ("quarter quarters", (25, 4)), ("foot feet ft", (12, 3)), ("inch inches", (12,)), ("yard yards", (3, 36)),
    ("mile miles", (5280, 1760)), ("pound pounds lb lbs ounce ounces oz", (16,)),
    ("gallon gallons", (4, 128, 16)), ("quart quarts", (4,)), ("pint pints", (2,)), ("cup cups", (8, 16)),
    ("kilogram kilograms kilometer kilometers kilometre kilometres kg km liter liters litre litres ml "
     "milliliter milliliters thousand thousands gram grams", (1000,)),
    ("meter meters metre metres cm centimeter centimeters centimetre centimetres mm millimeter millimeters",
     (100, 1000, 10)),
    ("hundred hundreds", (100,)), ("ten", (10,)),
    ("third thirds triple triples tripled thrice triangle triangles triplets", (3,)),
    ("fourth fourths quadruple quadrupled square squares rectangle rectangles", (4,)),
    ("fifth fifths", (5,)), ("tenth tenths", (10,)), ("clock am pm", (12, 60, 24)),
    ("circle circles degree degrees angle angles", (360, 180, 90)), ("triangle triangles", (180,)),
    ("squared cubed cubic area volume", (2, 3)), ("alphabet letters", (26,)), ("deck card cards", (52,)),
    ("leg legs", (4, 2, 6, 8)),
)
UNIT_CONSTANTS: dict[str, frozenset[Fraction]] = {}
for _words, _vals in _UNITS:
    for _w in _words.split():
        UNIT_CONSTANTS[_w] = UNIT_CONSTANTS.get(_w, frozenset()) | frozenset(Fraction(v) for v in _vals)
_WORDS_RE = re.compile(r"[a-z]+")
# each unit word's constants and ALWAYS_IMPLICIT's (key ""), with their reciprocals: computed once
_WITH_RECIPROCALS: dict[str, frozenset[Fraction]] = {
    w: vals | frozenset(1 / v for v in vals if v) for w, vals in [("", ALWAYS_IMPLICIT), *UNIT_CONSTANTS.items()]}


def implicit_constants(text: str) -> set[Fraction]:
    """Numbers ``text`` licenses without stating them: 0, 1, 2, 1/2, and unit conversion factors whose unit
    it names ("hours" -> 60, "dozen" -> 12, "%" -> 100), with their reciprocals."""
    out = set(_WITH_RECIPROCALS[""])
    for w in set(_WORDS_RE.findall(text.lower())) & UNIT_CONSTANTS.keys():
        out |= _WITH_RECIPROCALS[w]
    if "%" in text:
        out |= _WITH_RECIPROCALS["percent"]
    if "$" in text:
        out |= _WITH_RECIPROCALS["dollar"]
    return out


_ROUND_RE = re.compile(r"\bround|\bnearest\b")

# ---------------------------------------------------------------- severities (hand-set; docs/verifier.md)
# Flag severities (StepFlag.severity, the per-step error score), ordered by how sure each check is.
SEV_WRONG_CALC = 1.0  # a calculation or algebra step that does not hold
SEV_CONTRADICTION = 0.9  # conflicting final answers; a final answer that contradicts the last derived value
SEV_USED_BEFORE_DERIVED = 0.8
SEV_SKIPPED_STEP = 0.7  # an operand the reference derives but this solution never does
SEV_FINAL_IS_EARLIER = 0.5  # the final answer is an earlier intermediate value, not the last one
SEV_SOURCELESS = 0.5  # an operand that is neither given, nor derived, nor stated
SEV_OFF_TOPIC = 0.4
# a solution with the right final answer: the learned channel names a first error only at this P(bad) or above
CORRECT_ANSWER_MIN_PROB = 0.95
STRUCT_FLAG_WEIGHT = 0.6  # a structural flag's severity: this share of the problem's dimension score

# Dimension scores (the module docstring gives the formulas).
SYMBOLIC_FLOOR = 0.5  # symbolic_validity = 0.5 + 0.5 * wrong / checked
ORDERING_FIRST, ORDERING_EACH = 0.6, 0.2  # step_ordering: the first step used before derived, each further one
CONFLICTING_ANSWERS = 1.0  # logical_consistency ...
FINAL_CONTRADICTS = 1.0  # ... the final answer is not the last derived value
FINAL_IS_EARLIER_VALUE = 0.4  # ... but an earlier one
SOURCELESS_EACH, SOURCELESS_MAX = 0.3, 0.6  # ... per step with a sourceless operand, at most
UNDERIVED_FIRST, UNDERIVED_EACH, UNDERIVED_PER_SOURCELESS = 0.6, 0.2, 0.1  # ... skipped steps (with a reference)
STRUCT_EMPTY = 1.0  # structural_integrity: no steps at all
STRUCT_NO_ANSWER = 0.5
STRUCT_TRUNCATED = 0.8
STRUCT_REPETITIVE = 0.7
STRUCT_UNBALANCED = 0.4
STRUCT_EACH_FURTHER = 0.1  # added per structural problem beyond the largest
MIN_REPEAT_CHARS = 12  # shorter steps are not counted as repeats
REPEATED_SHARE = 0.25  # repetitive: two repeated steps, or repeats that are at least this share of the steps, or ...
COMPRESSION_RATIO = 0.12  # ... text over 400 characters that zlib compresses below this ratio


def _is_int(v: Value) -> bool:
    return isinstance(v, Fraction) and v.denominator == 1


def _small_count(v: Value) -> bool:
    """Integers up to 12 are too often unstated counts (legs, people, parts) to call them sourceless."""
    return isinstance(v, Fraction) and v.denominator == 1 and 0 <= v <= 12


_QFRAC_RE = re.compile(r"(?<![\d.])(\d{1,4})\s*/\s*(\d{1,4})(?![\d.])")


def question_fractions(question: str) -> set[Fraction]:
    """Fractions a question writes as ``a/b`` ("1/4 pound" -> 1/4), which the tokenizer reads as two numbers."""
    return {Fraction(int(a), int(b)) for a, b in _QFRAC_RE.findall(question[:20000]) if int(b)}


@lru_cache(maxsize=256)
def question_values(question: str) -> frozenset:
    """The values a question gives: its literals, quantities in words and written fractions (cached: the K
    samples of a problem share the question)."""
    return frozenset(numbers_in(question)).union(word_numbers(question), question_fractions(question))


class BudgetExceeded(BaseException):
    """Raised (from a timer signal or a deadline check) when a solution exceeds its time budget.

    A ``BaseException`` so that library code that swallows ``Exception`` cannot hide it."""


@dataclass
class StepFlag:
    step: int
    dim: str
    severity: float
    note: str


@dataclass
class Analysis:
    """Everything the checks found; :meth:`MathVerifier.analyze` returns it, ``score`` condenses it."""

    steps: list[str]
    calcs: list[list[Calculation]]
    dims: dict[str, float]
    flags: list[StepFlag] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    correct: bool = False
    final_answer: str | None = None
    first_error_step: int | None = None
    status: str = "ok"
    step_probs: list[float] | None = None  # the learned scorer's P(bad step), when it ran
    step_threshold: float | None = None  # ... and the probability above which it rejects a step
    align_inputs: tuple | None = None  # (question, steps) kept for a later embedding pass

    def step_scores(self) -> list[float]:
        """Per-step error score in [0, 1]. With the learned channel: its probability that the step is bad
        (its features already hold the step's flags), raised to the severity of a calculation or algebra
        step that does not hold; without it, the largest severity of the flags on the step. (On PRM800K
        phase-1 test the probability alone ranks steps better than its maximum with every flag's hand-set
        severity: docs/verifier.md.)"""
        out = [0.0] * len(self.steps)
        learned = bool(self.step_probs)
        for f in self.flags:
            if 0 <= f.step < len(out) and (not learned or f.dim == "symbolic_validity"):
                out[f.step] = max(out[f.step], f.severity)
        if learned:
            out = [max(x, p) for x, p in zip(out, self.step_probs, strict=False)] + out[len(self.step_probs):]
        return out


class ValueSet:
    """Numbers compared exactly (Fractions, hashed) or with float tolerance (irrational results)."""

    def __init__(self, values=()):
        self.exact: set[tuple[int, int]] = set()  # (numerator, denominator): hashes faster than Fraction
        self.approx: list[float] = []
        for v in values:
            self.add(v)

    def add(self, v: Value) -> None:
        if isinstance(v, Fraction):
            self.exact.add((v.numerator, v.denominator))
        else:
            self.approx.append(v)

    def __contains__(self, v: Value) -> bool:
        if isinstance(v, Fraction):
            if (v.numerator, v.denominator) in self.exact:
                return True
            return any(values_match(v, x) for x in self.approx)
        return any(values_match(v, x) for x in self.approx) or any(
            values_match(v, Fraction(*x)) for x in self.exact)


class _Budget:
    """Per-solution time budget, counted in CPU time so that a loaded machine does not time items out.

    In the main thread a CPU-time timer signal (``ITIMER_PROF``) interrupts Python code that runs past
    ``seconds``; :meth:`check` (called between steps) compares the calling thread's CPU time with the
    budget and, as a backstop for code that sleeps or waits, the wall clock with
    :func:`wall_backstop_s` (``max(10 * budget, 30 s)``)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.cpu_deadline = time.thread_time() + seconds
        self.wall_deadline = time.perf_counter() + wall_backstop_s(seconds)
        self._armed = False
        self._old = None

    def __enter__(self) -> _Budget:
        if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
            try:
                self._old = signal.signal(signal.SIGPROF, self._handler)
                signal.setitimer(signal.ITIMER_PROF, self.seconds)
                self._armed = True
            except (ValueError, OSError):
                self._armed = False
        return self

    @staticmethod
    def _handler(signum, frame):  # noqa: ARG004
        raise BudgetExceeded()

    def check(self) -> None:
        if time.thread_time() > self.cpu_deadline or time.perf_counter() > self.wall_deadline:
            raise BudgetExceeded()

    @contextmanager
    def paused(self):
        """Time that does not count (a one-off model load): the timer is stopped, deadlines move on."""
        c, w = time.thread_time(), time.perf_counter()
        left = signal.getitimer(signal.ITIMER_PROF)[0] if self._armed else 0.0
        if self._armed:
            signal.setitimer(signal.ITIMER_PROF, 0)
        try:
            yield
        finally:
            self.cpu_deadline += time.thread_time() - c
            self.wall_deadline += time.perf_counter() - w
            if self._armed:
                signal.setitimer(signal.ITIMER_PROF, max(left, 1e-3))

    def __exit__(self, *exc) -> None:
        if self._armed:
            signal.setitimer(signal.ITIMER_PROF, 0)
            signal.signal(signal.SIGPROF, self._old if self._old is not None else signal.SIG_DFL)


def wall_backstop_s(budget_s: float) -> float:
    """Wall-clock seconds after which a solution is abandoned whatever its CPU use: ``max(10 * budget, 30)``."""
    return max(10.0 * budget_s, 30.0)


def aggregate(dims: Mapping[str, float], weights: object) -> float:
    """Σ w_d · dims[d] / Σ w_d over the six dimensions (weights: a pydantic section or a mapping)."""
    w = {d: float(getattr(weights, d) if not isinstance(weights, Mapping) else weights.get(d, 0.0))
         for d in DIMENSIONS}
    total = sum(w.values())
    if total <= 0:
        return 0.0
    return round(sum(w[d] * float(dims.get(d, 0.0)) for d in DIMENSIONS) / total, 6)


class MathVerifier:
    """Scores solutions on six error dimensions; see the module docstring for the formulas."""

    def __init__(self, config: VerifyConfig | None = None):
        self.config = config or VerifyConfig()
        self._embedder = Embedder(self.config.embedding_model) if self.config.embedding_model else None
        self._scorer: StepScorer | None = None
        self._scorer_note: str | None = None
        self._scorer_loaded = False

    def warm_up(self) -> MathVerifier:
        """Load the lazy resources now (learned scorer, embedding model) rather than inside a first call."""
        _ = self.scorer
        if self._embedder is not None:
            _ = self._embedder.available
        return self

    @property
    def scorer(self) -> StepScorer | None:
        """The learned step scorer (loaded on first use; None when disabled or missing, see ``scorer_note``)."""
        if not self._scorer_loaded:
            self._scorer, self._scorer_note = load_scorer(self.config.step_scorer)
            self._scorer_loaded = True
        return self._scorer

    @property
    def scorer_note(self) -> str | None:
        _ = self.scorer
        return self._scorer_note

    @property
    def step_threshold(self) -> float | None:
        s = self.scorer
        if s is None:
            return None
        return self.config.step_threshold if self.config.step_threshold is not None else s.threshold

    # ------------------------------------------------------------ public API
    def score(self, question: str, solution: str | list[str], gold: str, reference: str | None = None,
              problem_id: str = "", index: int = 0) -> Verdict:
        """One verdict, whatever the input; never raises for bad text (status says what happened)."""
        t0 = time.perf_counter()
        try:
            with _Budget(self.config.time_budget_s) as budget:
                a = self.analyze(question, solution, gold, reference, budget=budget)
            return self._verdict(a, problem_id, index)
        except BudgetExceeded:
            return self.failed_verdict("timeout", f"exceeded the {self.config.time_budget_s:g} s CPU budget "
                                       f"after {time.perf_counter() - t0:.2f} s", problem_id, index, solution)
        except RecursionError:
            return self.failed_verdict("error", "input nested too deeply", problem_id, index, solution)
        except Exception as exc:  # noqa: BLE001 - outcomes are values: every solution gets a verdict
            return self.failed_verdict("error", f"{type(exc).__name__}: {str(exc)[:200]}", problem_id, index,
                                       solution)

    def score_batch(self, items: Sequence[Mapping], workers: int | None = None, progress: bool = True,
                    description: str = "verifying") -> list[Verdict]:
        """Score many items in worker processes (stuck workers are replaced); verdicts in input order.

        Each item's time budget is CPU time counted from when a worker starts it (worker start-up and
        queueing never count); see :mod:`verifier.batch`. Workers are forked (single-threaded callers) or
        fresh interpreters (threaded callers such as Prefect tasks), so the caller's ``__main__`` is not
        re-run; scripts should still guard their entry point with ``if __name__ == "__main__":``."""
        from verifier.batch import score_batch

        if self._embedder is None:
            return score_batch(self, items, workers=workers or self.config.workers, progress=progress,
                               description=description)
        # workers run the lexical measures only (a model load inside a worker would exceed the item's
        # budget); the parent then embeds, in batches, the solutions whose lexical alignment is suspect
        lexical = MathVerifier(self.config.model_copy(update={"embedding_model": None}))
        verdicts = score_batch(lexical, items, workers=workers or self.config.workers, progress=progress,
                               description=description)
        return self.embed_alignment(items, verdicts)

    def embed_alignment(self, items: Sequence[Mapping], verdicts: Sequence[Verdict]) -> list[Verdict]:
        """Verdicts with ``semantic_alignment`` recomputed from embeddings where the lexical measures saw a
        mismatch (:attr:`Alignment.mismatch` > 0); one batched encode for all of them."""
        def q(i: int) -> str:
            x = items[i].get("question") if isinstance(items[i], Mapping) else None
            return x[: self.config.max_text_chars] if isinstance(x, str) else ""

        todo = [i for i, v in enumerate(verdicts) if v.status == "ok" and v.steps
                and v.dims.get("semantic_alignment", 0.0) > 0 and alignment(q(i), v.steps).mismatch > 0]
        out = list(verdicts)
        if not todo or self._embedder is None:
            return out
        questions = [q(i) for i in todo]
        texts = ["\n".join(verdicts[i].steps) for i in todo]
        vecs = self._embedder.embed_many(questions + texts)
        if vecs is None:
            note = self._embedder.error
            return [v.model_copy(update={"notes": [*v.notes, note][:20]}) if i in set(todo) and note else v
                    for i, v in enumerate(out)]
        n = len(todo)
        for k, i in enumerate(todo):
            v = verdicts[i]
            sim = float(max(-1.0, min(1.0, float(vecs[k] @ vecs[n + k]))))
            align = alignment(questions[k], v.steps, sim)
            dims = dict(v.dims, semantic_alignment=round(float(align.score), 6))
            notes = [x for x in v.notes if not x.startswith(("shares ", "uses "))] + align.notes
            out[i] = v.model_copy(update={"dims": dims, "wrongness": aggregate(dims, self.config.wrongness),
                                          "absurdity": aggregate(dims, self.config.absurdity),
                                          "notes": list(dict.fromkeys(notes))[:20]})
        return out

    def similarity(self, a: str, b: str) -> float:
        """Embedding cosine (mapped to [0, 1]) when an embedding model is configured, else lexical."""
        if self._embedder is not None and isinstance(a, str) and isinstance(b, str):
            cos = self._embedder.cosine(a, b)
            if cos is not None:
                return round(max(0.0, min(1.0, cos)), 6)
        return lexical_similarity(a, b)

    def prefetch(self, texts: Sequence[str]) -> None:
        """Embed ``texts`` in batches, on all of torch's threads, ahead of :meth:`similarity` calls (a no-op
        without a model)."""
        if self._embedder is not None:
            self._embedder.embed_many([t for t in texts if isinstance(t, str)], single_thread=False)

    def failed_verdict(self, status: str, note: str, problem_id: str = "", index: int = 0,
                       solution: str | list[str] | None = None) -> Verdict:
        """Verdict for a solution that could not be analysed: every dimension at 1 (maximally suspect)."""
        dims = dict.fromkeys(DIMENSIONS, 1.0)
        steps: list[str] = []
        if isinstance(solution, list):
            steps = [str(s)[:2000] for s in solution[:50]]
        elif isinstance(solution, str):
            steps = [solution[:2000]] if solution.strip() else []
        return Verdict(problem_id=str(problem_id), index=int(index), dims=dims,
                       wrongness=aggregate(dims, self.config.wrongness),
                       absurdity=aggregate(dims, self.config.absurdity), correct=False,
                       first_error_step=None, steps=steps, status=status, notes=[note])

    # ------------------------------------------------------------ analysis
    def analyze(self, question: str, solution: str | list[str], gold: str, reference: str | None = None,
                budget: _Budget | None = None, use_embedding: bool = True, partial: bool = False) -> Analysis:
        """All checks on one solution (no time limit unless ``budget`` is given). ``partial``: the steps are
        the start of a solution (PRM800K's rated prefixes): without an explicit answer it is not graded (not
        a wrong answer, and no first error by itself); the gold answer still informs the step scores."""
        limit = self.config.max_text_chars
        question = question[:limit] if isinstance(question, str) else ""
        gold = gold if isinstance(gold, str) else ""
        steps, notes = _split_solution(solution, limit)
        steps = [_unlabel(s) for s in steps]
        text = "\n".join(steps)
        calcs = _calculations(steps, question, budget)
        given = question_values(question)
        derived = _reference_derived(reference[:limit], given) if isinstance(reference, str) else []
        ref_derived = ValueSet(derived) if derived else None
        symbolic, flags = _symbolic(calcs)
        ordering, found, unsupported = _ordering(steps, calcs, given, implicit_constants(question + "\n" + text),
                                                 ref_derived)
        flags += found
        cands = answer_candidates(text)
        final = extract_answer(text) if steps else None
        final_num = parse_number(final) if final is not None else None
        if budget:
            budget.check()
        gold_answer = extract_answer(gold)
        graded = gold_answer is not None and (not partial or bool(cands))  # a prefix with no answer: ungraded
        correct = bool(steps) and graded and answers_equal(gold, text)
        if gold_answer is None:
            notes.append("gold answer missing or empty: correctness cannot be judged")
        logical, found = _consistency(steps, calcs, cands, final_num, unsupported, **_reading(question, text, steps))
        flags += found
        structural, found = _structure(steps, text, cands)
        flags += found
        align, found_notes = self._alignment(question, steps, text, budget, use_embedding)
        flags += [StepFlag(i, "semantic_alignment", SEV_OFF_TOPIC, f"step {i} is unrelated to the question")
                  for i in align.off_topic_steps]
        notes += found_notes
        dims = {"semantic_alignment": align.score, "structural_integrity": structural, "step_ordering": ordering,
                "logical_consistency": logical, "symbolic_validity": symbolic,
                "answer_correctness": 0.0 if correct else 1.0}
        if not correct and graded:
            notes.append(f"final answer {final!r} does not match gold {gold_answer!r}"[:240])
        a = Analysis(steps=steps, calcs=calcs, dims={k: round(float(v), 6) for k, v in dims.items()},
                     flags=flags, notes=notes, correct=correct, final_answer=final)
        self._learned(a, question, gold if gold_answer is not None else "",
                      {final: correct} if final is not None and graded else None, budget)
        a.first_error_step, note = _first_error(a, "" if partial else gold, reference, final_num, given)
        a.notes += [note] if note else []
        if not steps or (final is None and not any(calcs)):
            a.status = "unparsed"
        return a

    def _alignment(self, question: str, steps: list[str], text: str, budget: _Budget | None,
                   use_embedding: bool) -> tuple[Alignment, list[str]]:
        """Lexical alignment; where it sees a mismatch, the embedding confirms or clears it (the model is
        loaded once, outside the time budget). Returns the alignment and its notes."""
        align = alignment(question, steps)
        emb = self._embedder if use_embedding else None
        notes: list[str] = []
        if emb is not None and emb.error:
            notes.append(emb.error)
        elif emb is not None and steps and align.mismatch > 0:
            if not emb.loaded:
                with budget.paused() if budget else nullcontext():
                    _ = emb.available
            embed_sim = emb.cosine(question, text)
            if embed_sim is None and emb.error:
                notes.append(emb.error)
            elif embed_sim is not None:
                align = alignment(question, steps, embed_sim)
        return align, notes + align.notes

    def _learned(self, a: Analysis, question: str, gold: str, known: dict | None, budget: _Budget | None) -> None:
        """The learned channel: ``a.step_probs`` and ``a.step_threshold``, or the note that it is off."""
        scorer = self.scorer
        if scorer is not None and a.steps:
            if budget:
                budget.check()
            a.step_probs = scorer.step_probs(question, a.steps, a.calcs, a.flags, gold, known=known)
            a.step_threshold = self.step_threshold
        elif self.scorer_note:
            a.notes.append(self.scorer_note)

    # ------------------------------------------------------------ verdicts
    def _verdict(self, a: Analysis, problem_id: str, index: int) -> Verdict:
        notes = list(dict.fromkeys([f.note for f in a.flags] + a.notes))
        return Verdict(
            problem_id=str(problem_id), index=int(index), dims=a.dims,
            wrongness=aggregate(a.dims, self.config.wrongness),
            absurdity=aggregate(a.dims, self.config.absurdity),
            correct=a.correct, first_error_step=a.first_error_step, steps=a.steps, status=a.status,
            notes=[n[:300] for n in notes[:20]],
        )


# ---------------------------------------------------------------- the checks
# Each check returns what it finds (a dimension score and its StepFlags); none mutates its arguments.
_STEP_LABEL_RE = re.compile(r"^[#*_\s]{0,8}(?:Step|STEP)\s*\d{1,3}\s*[:.)]\s*[*_]{0,3}\s*(?=\S)")


def _unlabel(step: str) -> str:
    """A step without its "Step 3:" / "**Step 3:**" / "### Step 3." label: the label's number is no
    operand, value or answer of the solution."""
    return _STEP_LABEL_RE.sub("", step, count=1)


def _split_solution(solution: str | list[str], limit: int) -> tuple[list[str], list[str]]:
    """The solution's steps (at most ``limit`` characters in all) and a note when it was cut."""
    if isinstance(solution, str):
        end = end_of_output(solution[:limit])
        cut = [f"checked the output up to character {len(end)} of {len(solution)}: a chat-end token or a new turn "
               "follows the answer"] if len(end) < len(solution[:limit].rstrip()) else []
        if len(solution) <= limit:
            return split_steps(end), cut
        return split_steps(end), [f"solution has {len(solution)} characters; checked the first {limit}", *cut]
    steps, used = [], 0
    for s in solution or []:
        s = str(s).strip()
        if used + len(s) > limit:
            return steps, [f"solution longer than {limit} characters; checked a prefix"]
        if s:
            steps.append(s)
            used += len(s)
    return steps, []


def _calculations(steps: list[str], question: str, budget: _Budget | None) -> list[list[Calculation]]:
    """The symbolic channel's calculations per step, then the algebra checks (equalities with variables:
    rewrites, substitutions of the values the solution assigns) appended to their steps."""
    calcs: list[list[Calculation]] = []
    for s in steps:
        if budget:
            budget.check()
        calcs.append(extract_calculations(s))
    for i, checks in enumerate(check_algebra(steps, budget.check if budget else None, question)):
        calcs[i] += checks
    return calcs


def _reading(question: str, text: str, steps: list[str]) -> dict[str, bool]:
    """How to read the final answer: in cents (the question asks for cents), rounded (the text asks for a
    rounding) and whether the solution writes LaTeX."""
    qlow = question.lower()
    return {"cents": bool(re.search(r"\bcents?\b", qlow)),
            "rounding": bool(_ROUND_RE.search(qlow) or _ROUND_RE.search(text[-2000:].lower())),
            "latex": any(m for st in steps for _, m in split_math(st[:20000]))}


def _symbolic(calcs: list[list[Calculation]]) -> tuple[float, list[StepFlag]]:
    """symbolic_validity: ``0`` when every checked calculation holds, else ``0.5 + 0.5 * wrong / checked``."""
    checked = [(i, c) for i, cs in enumerate(calcs) for c in cs if c.ok is not None]
    flags = [StepFlag(i, "symbolic_validity", SEV_WRONG_CALC, f"step {i}: {c.error}")
             for i, c in checked if c.ok is False]
    if not flags:
        return 0.0, flags
    return min(1.0, SYMBOLIC_FLOOR + SYMBOLIC_FLOOR * len(flags) / len(checked)), flags


def _ordering(steps: list[str], calcs: list[list[Calculation]], given: set, implicit: set | None = None,
              ref_derived: ValueSet | None = None) -> tuple[float, list[StepFlag], list]:
    """Operands used before they are derived (step_ordering score and flags); also returns operands with
    no source.

    An operand is fine when the question gives it (also as a percentage), when it is ``implicit``
    (:func:`implicit_constants`) or when an earlier calculation (or an earlier one in the same step)
    derives it. Otherwise:

    - a later step derives it: *used before derived* (a step-ordering flag), even when an earlier
      sentence already stated it ("the discount is $12 so he pays $80-$12", then "15% of $80 = $12"),
      unless the two steps name it as different things (:func:`_other_quantity`);
    - nothing derives it and ``ref_derived`` (the values a reference solution derives) holds it: a
      quantity that should have been derived but never is (returned as ``(step, value, "underived")``);
    - nothing derives it and no sentence stated it before (or twice in the same step: "February has
      28 days ... 31+28"): an operand with no source (``(step, value, "unsupported")``).
    """
    early, unsupported = _misplaced_operands(steps, calcs, given, implicit, ref_derived)
    flags: list[StepFlag] = []
    for i, v, j in early:
        if not any(f.step == i for f in flags):
            flags.append(StepFlag(i, "step_ordering", SEV_USED_BEFORE_DERIVED,
                                  f"step {i} uses {_fmt(v)} before step {j} derives it"))
    score = 0.0 if not flags else min(1.0, ORDERING_FIRST + ORDERING_EACH * (len(flags) - 1))
    return score, flags, unsupported


_ANNOTATION_RE = re.compile(ANNOTATION)
_COUNT_NOUN_RE = re.compile(r"(=\s*\$?\s*)?(?<![\d.,])(\d[\d,]*(?:\.\d+)?)\s*([A-Za-z]{3,})")
_NOT_NOUNS = STOPWORDS | {"times", "plus", "minus", "divided", "multiplied", "equals", "gives", "yields",
                          "percent", "per", "cents", "dollars", "left", "remaining", "more", "less", "fewer"}


def _nouns_after(step: str, v: Value, results: bool = False) -> set[str]:
    """The words that follow ``v`` where the step writes it in prose ("4 friends", "<<3+1=4>>4 donuts");
    with ``results``, those after a result (``= 5 hours``) when there are any."""
    out, after_eq = set(), set()
    for m in _COUNT_NOUN_RE.finditer(_ANNOTATION_RE.sub(" ", step)):
        word = m.group(3).lower()
        if word in _NOT_NOUNS:
            continue
        try:
            if Fraction(m.group(2).replace(",", "")) == v:
                out.add(word.rstrip("s"))
                if m.group(1):
                    after_eq.add(word.rstrip("s"))
        except ValueError:
            continue
    return after_eq if results and after_eq else out


def _other_quantity(used_in: str, derived_in: str, v: Value) -> bool:
    """Whether the step that uses ``v`` and the later step that derives it name it as different things:
    "Andrew is having 4 friends over ... 4 x 3 = 12", then "3 + 1 = 4 donuts for each friend" is a
    coincidence of values, not a step out of order."""
    used, derived = _nouns_after(used_in, v), _nouns_after(derived_in, v, results=True)
    return bool(used) and bool(derived) and not used & derived


def _first_derived(calcs: list[list[Calculation]]) -> dict[Value, int]:
    """The step where each value is first derived (by a calculation that is not wrong)."""
    out: dict[Value, int] = {}
    for i, cs in enumerate(calcs):
        for c in cs:
            for r in (c.result, c.alt):
                if c.ok is not False and r is not None and r not in out:
                    out[r] = i
    return out


def _licensed(given: set, implicit: set | None) -> tuple[ValueSet, ValueSet]:
    """(the values the question gives, also as ``1 ± p``, ``x100`` and ``/100``; those plus ``implicit``)."""
    implicit = implicit if implicit is not None else set(ALWAYS_IMPLICIT)
    given_set = ValueSet()
    exact = given_set.exact  # (numerator, denominator) pairs in lowest terms, built without Fraction arithmetic
    for g in given:
        if not isinstance(g, Fraction):
            given_set.add(g)
            continue
        n, d = g.numerator, g.denominator
        # g, and for 0 < g < 1 also 1 + g ("50% more": 1.5) and 1 - g; each also x100 and /100
        for a in ((n, d + n, d - n) if 0 < n < d else (n,)):  # gcd(d +- n, d) = gcd(n, d) = 1
            k, m = math.gcd(a * 100, d), math.gcd(a, d * 100)
            exact.update(((a, d), (a * 100 // k, d // k), (a // m, d * 100 // m)))
    base = ValueSet(implicit)
    base.exact |= given_set.exact
    base.approx += given_set.approx
    return given_set, base


def _misplaced_operands(steps: list[str], calcs: list[list[Calculation]], given: set, implicit: set | None,
                        ref_derived: ValueSet | None) -> tuple[list[tuple[int, Value, int]], list]:
    """(``(step, value, deriving step)`` for operands used before a later step derives them,
    ``(step, value, "underived" | "unsupported")`` for operands that nothing derives); see :func:`_ordering`."""
    first_derived = _first_derived(calcs)
    given_set, base = _licensed(given, implicit)
    derived, stated = ValueSet(), ValueSet()
    early: list[tuple[int, Value, int]] = []
    unsupported: list[tuple[int, Value, str]] = []
    for i, cs in enumerate(calcs):
        plain = numbers_in(steps[i], annotations=False)
        here = ValueSet(v for v, k in Counter(plain).items() if k >= 2)  # stated twice in the step itself
        for c in cs:
            for v in c.operands:
                if v in derived or v in given_set:
                    continue
                if v in base and (ref_derived is None or v in ALWAYS_IMPLICIT or v not in ref_derived
                                  or v in first_derived):
                    continue
                j = first_derived.get(v)
                if j == i:
                    continue  # a later calculation of the same step derives it
                if j is not None and j > i:
                    if not _other_quantity(steps[i], steps[j], v):
                        early.append((i, v, j))
                elif ref_derived is not None and v in ref_derived:
                    unsupported.append((i, v, "underived"))
                elif v not in stated and v not in here and not _small_count(v):
                    unsupported.append((i, v, "unsupported"))
            if c.result is not None and c.ok is not False:
                derived.add(c.result)
                if c.alt is not None:
                    derived.add(c.alt)
        for v in plain:
            stated.add(v)
    return early, unsupported


def _consistency(steps, calcs, cands, final_num, unsupported, cents: bool = False, rounding: bool = False,
                 latex: bool = False) -> tuple[float, list[StepFlag]]:
    """logical_consistency: conflicting final answers; a final answer that contradicts the last derived value
    (unless math the checks cannot follow, such as ``$h = \\boxed{7}$`` or numbers no calculation accounts
    for, lies between them); operands with no source (not in LaTeX solutions, whose numbers come from
    reasoning in words and algebra) and operands the reference derives but this solution never does."""
    if latex:
        unsupported = [u for u in unsupported if u[2] == "underived"]
    found = [_conflicting_answers(steps, cands), _final_vs_derived(steps, calcs, final_num, cents, rounding),
             _sourceless(unsupported)]
    return min(1.0, max(s for s, _ in found)), [f for _, flags in found for f in flags]


def _conflicting_answers(steps: list[str], cands) -> tuple[float, list[StepFlag]]:
    """More than one distinct explicit final answer."""
    nums, strs = [], set()
    for _, a in cands:
        n = parse_number(a)
        if n is not None:
            nums.append(n)
        else:
            strs.add(normalize_answer(a))
    distinct: list = []
    for n in nums:
        if not any(numbers_equal(n, m) for m in distinct):
            distinct.append(n)
    if not (len(distinct) > 1 or (len(strs) > 1 and not nums)):
        return 0.0, []
    vals = [_fmt(n[0]) for n in distinct] or sorted(strs)
    return CONFLICTING_ANSWERS, [StepFlag(_answer_step(steps), "logical_consistency", SEV_CONTRADICTION,
                                          f"conflicting final answers: {vals[:4]}")]


def _final_vs_derived(steps, calcs, final_num, cents: bool, rounding: bool) -> tuple[float, list[StepFlag]]:
    """A final answer that differs from the last derived value (and the value it takes instead)."""
    derived = [(i, c.result) for i, cs in enumerate(calcs) for c in cs if c.result is not None]
    if final_num is None or not derived:
        return 0.0, []
    fv, fpct = final_num

    def ok(v: Value) -> bool:  # equal, the percent read as a number, rounded (when the text says so: "to
        # the nearest integer", "rounds to"), or dollars as cents (a question asking for cents)
        return (values_match(fv, v) or (fpct and values_match(fv * 100, v))
                or (rounding and _is_int(fv) and not _is_int(v) and abs(to_float(v) - to_float(fv)) <= 0.5)
                or (cents and values_match(fv, v * 100)))

    last_i, last_v = derived[-1]
    last_alt = next((c.alt for c in reversed(calcs[last_i]) if c.result == last_v), None)
    if ok(last_v) or (last_alt is not None and ok(last_alt)) or \
            _untracked_math(steps, calcs, last_i, _answer_step(steps), fv):
        return 0.0, []
    alts = [c.alt for cs in calcs for c in cs if c.alt is not None]
    earlier = any(ok(v) for _, v in derived) or any(ok(v) for v in alts)
    note = f"final answer {_fmt(fv)} differs from the last derived value {_fmt(last_v)} (step {last_i})"
    return (FINAL_IS_EARLIER_VALUE if earlier else FINAL_CONTRADICTS), [StepFlag(
        _answer_step(steps), "logical_consistency", SEV_FINAL_IS_EARLIER if earlier else SEV_CONTRADICTION, note)]


def _sourceless(unsupported: list) -> tuple[float, list[StepFlag]]:
    """Quantities with no source (0.3 per step, at most 0.6), and quantities that the reference derives but
    this solution never does (0.6, +0.2 per further step, +0.1 per sourceless step); one flag per step."""
    per_step: dict[int, tuple[Value, str]] = {}
    for i, v, kind in unsupported:
        if i not in per_step or (kind == "underived" and per_step[i][1] != "underived"):
            per_step[i] = (v, kind)
    n_under = sum(k == "underived" for _, k in per_step.values())
    n_unsup = len(per_step) - n_under
    score = min(SOURCELESS_MAX, SOURCELESS_EACH * n_unsup) if n_unsup else 0.0
    if n_under:
        score = max(score, min(1.0, UNDERIVED_FIRST + UNDERIVED_EACH * (n_under - 1)
                               + UNDERIVED_PER_SOURCELESS * n_unsup))
    flags = [StepFlag(i, "logical_consistency", SEV_SKIPPED_STEP,
                      f"step {i} uses {_fmt(v)}, which the reference derives but this solution never does "
                      "(a skipped step?)") if kind == "underived" else
             StepFlag(i, "logical_consistency", SEV_SOURCELESS,
                      f"step {i} uses {_fmt(v)}, which is neither given nor derived")
             for i, (v, kind) in sorted(per_step.items())]
    return score, flags


def _structure(steps: list[str], text: str, cands) -> tuple[float, list[StepFlag]]:
    """structural_integrity: the largest structural problem, plus 0.1 per further one."""
    if not steps:
        return STRUCT_EMPTY, []
    last = len(steps) - 1
    found: list[tuple[float, str, int]] = []
    if not cands:
        found.append((STRUCT_NO_ANSWER, "no explicit final answer", last))
        tail = text.rstrip()[-1:]
        if tail and tail not in ".!?)]}$*|" and not tail.isdigit():
            found.append((STRUCT_TRUNCATED, "ends mid-sentence without a final answer (truncated?)", last))
    found += _repetition(steps, text)
    problems = _unbalanced(text)
    if problems:
        found.append((STRUCT_UNBALANCED, "unbalanced " + ", ".join(problems), _first_unbalanced(steps)))
    flags = [StepFlag(i, "structural_integrity", sev * STRUCT_FLAG_WEIGHT, note) for sev, note, i in found]
    if not found:
        return 0.0, flags
    return min(1.0, max(s for s, _, _ in found) + STRUCT_EACH_FURTHER * (len(found) - 1)), flags


def _repetition(steps: list[str], text: str) -> list[tuple[float, str, int]]:
    """Duplicate steps, or text that compresses far too well: ``[(severity, note, step)]`` or ``[]``."""
    seen: set[str] = set()
    dups = []
    for i, s in enumerate(steps):
        key = re.sub(r"\s+", " ", s.lower()).strip()
        if len(key) < MIN_REPEAT_CHARS:
            continue
        if key in seen:
            dups.append(i)
        else:
            seen.add(key)
    ratio = len(zlib.compress(text.encode("utf-8", "replace"), 1)) / max(1, len(text)) if len(text) > 400 else 1
    if len(dups) >= 2 or (dups and len(dups) >= REPEATED_SHARE * len(steps)) or ratio < COMPRESSION_RATIO:
        return [(STRUCT_REPETITIVE, f"repetitive ({len(dups)} repeated steps, compression ratio {ratio:.2f})",
                 dups[0] if dups else len(steps) - 1)]
    return []


def _unbalanced(text: str) -> list[str]:
    """What the text leaves unbalanced: braces, brackets, ``$`` delimiters, ``\\[ \\]``."""
    body = text.replace("\\{", "").replace("\\}", "")
    problems = []
    if body.count("{") != body.count("}"):
        problems.append("braces")
    if abs((body.count("(") + body.count("[")) - (body.count(")") + body.count("]"))) >= 1 and \
            "\\left" not in body:
        problems.append("brackets")
    if "\\" in text and not re.search(r"\$\s?\d", text):  # no money signs: $ delimits math
        if len(re.findall(r"(?<!\\)\$", text)) % 2:
            problems.append("$ delimiters")
    if "\\[" in text and text.count("\\[") != text.count("\\]"):
        problems.append("\\[ \\]")
    return problems


# ---------------------------------------------------------------- first erroneous step
def _first_error(a: Analysis, gold: str, reference: str | None, final_num, given: set) -> tuple[int | None, str | None]:
    """The first erroneous step (module docstring) and, when the learned channel names it, a note saying so.

    A solution whose final answer matches the gold answer is rarely wrong on the way (of 1,500 PRM800K
    phase-1 train complete solutions, 9% of those with a right answer have a bad step, against 94% with a
    wrong one: docs/verifier.md), so it gets a first error only from the surest evidence: a calculation or algebra step that does not hold, an
    operand used before it is derived (in a solution without LaTeX: in MATH-style solutions with a right
    answer it fires on steps that PRM800K's labellers rated good), or a step the learned scorer rejects at
    :data:`CORRECT_ANSWER_MIN_PROB` or above."""
    note = None
    learned = None
    if a.step_probs and a.step_threshold is not None:  # the learned channel rejects the step
        cut = max(a.step_threshold, CORRECT_ANSWER_MIN_PROB) if a.correct else a.step_threshold
        learned = next((i for i, p in enumerate(a.step_probs) if p > cut), None)
        if learned is not None:
            note = (f"step {learned}: the learned step scorer rejects it "
                    f"(P(bad) = {a.step_probs[learned]:.3f} > {cut:.3f})")
    if a.correct:
        sure_dims = ("symbolic_validity",) if _has_latex(a.steps) else ("symbolic_validity", "step_ordering")
        sure = [f.step for f in a.flags if f.dim in sure_dims] + ([learned] if learned is not None else [])
        return (min(sure) if sure else None), note
    strong = [f.step for f in a.flags if f.dim in ("symbolic_validity", "step_ordering")]
    if reference and _stepwise_reference(reference):
        ref_step = _reference_deviation(a, reference, gold, final_num, given)
        if ref_step is not None:
            strong.append(ref_step)
    if learned is not None:
        strong.append(learned)
    if strong:
        return min(strong), note
    weak = [f.step for f in a.flags if f.dim == "logical_consistency"
            or (f.dim == "structural_integrity" and f.note.startswith("unbalanced"))]
    if weak:
        return min(weak), note
    if not a.steps or extract_answer(gold) is None:
        return None, note  # empty, or no gold answer to call it wrong against
    # wrong answer without a located error: the step where the wrong final value first appears
    if final_num is not None:
        for i, s in enumerate(a.steps):
            if any(values_match(final_num[0], v) for v in numbers_in(s)):
                return i, note
    return _answer_step(a.steps), note


def _has_latex(steps: list[str]) -> bool:
    return any(is_math for s in steps for _, is_math in split_math(s[:20000]))


def _stepwise_reference(reference: str) -> bool:
    """Whether the reference holds every intermediate value of a solution: GSM8K-style, calculator
    annotations or plain text without math spans. A MATH reference (LaTeX) takes its own route, often
    skipping values: on PRM800K phase-1 train's wrong-answer solutions, its values located the first error
    in 64% of them, against 85% without (docs/verifier.md)."""
    if "<<" in reference:
        return True
    return not any(is_math for _, is_math in split_math(reference[:20000]))


def _reference_derived(reference: str, given: set) -> list[Value]:
    """Values the reference solution derives in its calculations (results that the question does not give)."""
    out = []
    for st in split_steps(reference):
        for c in extract_calculations(st):
            if c.ok is not False:
                out += [v for v in (c.result, c.alt) if v is not None and v not in given]
    return out


def _reference_deviation(a: Analysis, reference: str, gold: str, final_num, given: set) -> int | None:
    """Earliest step, among those the final answer depends on, that derives a value the reference never
    reaches (GSM8K reference answers hold every intermediate value) and that nothing derived from it brings
    back onto the reference: ``3 + 4 = 7`` then ``16 - 7 = 9`` is the reference's ``16 - 3 - 4 = 9`` by
    another route, so 7 is no deviation."""
    ref_set = _reference_values(reference, gold, given)
    producers: dict[int, list[tuple[Value, list[Fraction]]]] = {}
    for i, cs in enumerate(a.calcs):
        for c in cs:
            if c.result is not None:
                producers.setdefault(i, []).append((c.result, c.operands))
    # values the reference derives on the way (not the question's numbers, not the gold answer): reaching
    # one of these from an off-reference value is another route, reaching a given number is chance
    g = parse_number(extract_answer(gold) or "")
    waypoints = ValueSet([v for v in _reference_derived(reference, given) if g is None or not values_match(v, g[0])])
    off_steps = [i for i, prods in producers.items()
                 if any(v not in ref_set and not _rejoins(v, i, producers, waypoints) for v, _ in prods)]
    if not off_steps:
        return None
    if final_num is None:
        return min(off_steps)
    chain_off = sorted(i for i in _ancestry(producers, final_num[0]) if i in off_steps)
    return chain_off[0] if chain_off else min(off_steps)


def _rejoins(value: Value, step: int, producers: dict[int, list[tuple[Value, list[Fraction]]]],
             waypoints: ValueSet) -> bool:
    """Whether a value derived (at this step or later) from ``value`` is one of the reference's ``waypoints``."""
    frontier, seen, n_seen = [value], ValueSet(), 0
    while frontier and n_seen < 50:
        v = frontier.pop()
        if v in seen:
            continue
        seen.add(v)
        n_seen += 1
        for i, prods in producers.items():
            if i < step:
                continue
            for res, ops in prods:
                if any(values_match(o, v) for o in ops) and not values_match(res, v):
                    if res in waypoints:
                        return True
                    frontier.append(res)
    return False


def _reference_values(reference: str, gold: str, given: set) -> ValueSet:
    """Every value the reference solution reaches: the question's numbers, the reference's calculations and
    numbers, and the gold answer."""
    ref_values: list[Value] = list(given)
    for s in split_steps(reference):
        for c in extract_calculations(s):
            ref_values += [v for v in c.values if v is not None]
        ref_values += numbers_in(s)
    g = parse_number(extract_answer(gold) or "")
    if g is not None:
        ref_values.append(g[0])
    return ValueSet(ref_values)


def _ancestry(producers: dict[int, list[tuple[Value, list[Fraction]]]], final: Value) -> set[int]:
    """The steps whose calculations the final value derives from (following operands back, 200 values at most)."""
    target = [final]
    seen = ValueSet()
    n_seen = 0
    steps_in_chain: set[int] = set()
    while target and n_seen < 200:
        v = target.pop()
        if v in seen:
            continue
        seen.add(v)
        n_seen += 1
        for i, prods in producers.items():
            for res, ops in prods:
                if values_match(res, v):
                    steps_in_chain.add(i)
                    target += [o for o in ops if o not in seen]
    return steps_in_chain


_LATEX_VAR_RE = re.compile(r"(?<![\\A-Za-z])[A-Za-z](?![A-Za-z])")
_LATEX_NOISE_RE = re.compile(r"\\(?:text\w*|mathrm|mbox|operatorname)\s*\{[^{}]*\}|\\[A-Za-z]+")


def _untracked_math(steps: list[str], calcs: list[list[Calculation]], first: int, last: int, final: Value) -> bool:
    """Whether steps ``first..last`` hold math the checks cannot follow: a LaTeX span with a variable
    (``$h = \\boxed{7}$``: the answer comes from an equation) or a number that no calculation of its
    step uses or derives and that is not the final answer ("... a quotient of 33, so ...")."""
    for j in range(max(0, first), min(last, len(steps) - 1) + 1):
        step = steps[j]
        for seg, is_math in split_math(step[:20000]):
            if is_math and _LATEX_VAR_RE.search(_LATEX_NOISE_RE.sub(" ", seg)):
                return True
        known = ValueSet([final])
        for c in calcs[j]:
            for v in [*c.values, *c.operands, c.result, c.alt]:
                if v is not None:
                    known.add(v)
        if any(v not in known for v in numbers_in(step, annotations=False)):
            return True
    return False


def _answer_step(steps: list[str]) -> int:
    for i in range(len(steps) - 1, -1, -1):
        if answer_candidates(steps[i]):
            return i
    return max(0, len(steps) - 1)


def _first_unbalanced(steps: list[str]) -> int:
    for i, s in enumerate(steps):
        t = s.replace("\\{", "").replace("\\}", "")
        if t.count("{") != t.count("}") or (t.count("(") + t.count("[")) != (t.count(")") + t.count("]")):
            return i
    return max(0, len(steps) - 1)


def _fmt(v: Value) -> str:
    if isinstance(v, Fraction):
        if v.denominator == 1:
            return str(v.numerator)
        f = to_float(v)
        if math.isinf(f):
            return fmt_huge(v)
        return f"{f:.6g}" if abs(f) >= 1e-4 else f"{v.numerator}/{v.denominator}"
    return f"{v:.6g}"
