"""Algebra-aware checks: equalities whose sides hold variables (``(x+2)^2 = x^2+4x+4``, ``a+b = -3+3``).

Safety: no ``eval``, ``exec``, ``sympify`` or ``parse_expr`` (sympy's parsers call ``eval``), and no
sympy at all: the text is tokenized by :func:`verifier.arith.tokenize` (one regular expression) and parsed
by the small recursive-descent parser below into tuples; values are computed with the bounded operations
of :mod:`verifier.arith` (exponent, result-size and depth limits). Sides are size-bounded
(:data:`MAX_SIDE_TOKENS`, :data:`MAX_DEPTH`; variable powers up to :data:`MAX_VAR_EXPONENT`, polynomials up
to :data:`MAX_TERMS` terms), so hostile input fails fast with :class:`Unsupported`, and the caller's
time budget (``_Budget`` in :mod:`verifier.core`) is checked between chains.

Comparison: two polynomials (``\\pi`` counts as a variable: it is transcendental) are compared exactly by
expanding both sides; anything else (``\\frac{1}{x}``, ``\\sqrt{x}``) by exact rational evaluation at
seeded random points (floats only for irrational values): equal at every point is an identity, unequal
at every point is not, mixed is left unchecked.

What is flagged (false positives matter more than misses; an equation to solve is not a wrong identity):

- a *rewrite*: both sides in the same variables, not an identity, and either another link of the same
  chain is a verified rewrite (``A = B = C``), or both sides are polynomials of one degree whose leading
  parts share a term and one side is unexpanded (a product or power of a sum: ``(x+2)^2 = x^2+2x+4``,
  ``3(x+2) = 3x+5``), and the step does not speak of solving an equation ("solve", "if", "when", ...);
- a *substitution*: both sides become numbers under the values the solution assigns to the variables
  (``a = -3``, ``b = 3``, then ``a+b = -3+3``), and no combination of those values makes it true.

Either way, an equality that some combination of the values the solution assigns (anywhere in it)
satisfies is never flagged: that is how a solved equation looks. Definitions (``x = 5``, ``f(x) = x^2``),
equations in unassigned variables, functions (``f(x)``, ``\\sin``), ``i``, sums, matrices and anything
unknown are left unchecked. Example::

    >>> [(c.text, c.ok) for c in check_algebra(["Expanding, $(x+2)^2 = x^2+2x+4$."])[0]]
    [('(x+2)^2 = x^2+2x+4', False)]
"""

from __future__ import annotations

import itertools
import math
import random
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

from verifier.arith import (
    ANNOTATION,
    FUNCTIONS,
    Calculation,
    EvalError,
    Tok,
    Value,
    _add,
    _binom,
    _div,
    _fact,
    _mul,
    _pow,
    _sqrt,
    _with_vars,
    latex_tokens,
    normalize_chars,
    split_math,
    to_float,
    tokenize,
    values_match,
)

MAX_SIDE_TOKENS = 60
MAX_DEPTH = 30
MAX_VAR_EXPONENT = 12
MAX_TERMS = 120
MAX_SEGMENT_CHARS = 600
MAX_CHAINS = 60  # per solution
MAX_VALUES = 4  # values remembered per variable
MAX_COMBOS = 64
N_POINTS = 4
MAX_SOLVED_VARS = 2
MAX_EXPLAINING_EQUATIONS = 8  # the stated equations (latest first) a continuation may have used
SOLVED_WINDOW = 3
QUESTION_EQS = True

_GREEK = frozenset("\\" + g for g in (
    "alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta kappa lambda mu nu xi rho sigma tau "
    "upsilon phi varphi chi psi omega Gamma Delta Theta Lambda Xi Sigma Phi Psi Omega").split())
_FUNC_LETTERS = frozenset("fghpqrsFGHPQRST")  # f(x), p(1): function applications, not products
_EQUATION_CUE = re.compile(r"\b(?:solv\w*|equations?|roots?|zeros?|when|whenever|if|suppose|assum\w*|sett?ing|"
                           r"set|intersect\w*|satisf\w*|must|want|need\w*|requir\w*|conditions?|such that|"
                           r"for which|true|only|gives? us|implies|thus|so|hence|therefore|then)\b",
                           re.IGNORECASE)
_HYPOTHETICAL = re.compile(r"\b(?:if|were|would|suppose|assum\w*|say|case|otherwise|try\w*|test\w*|"
                           r"instead|could|might|example|check\w*)\b", re.IGNORECASE)
# prose around a stated value that makes it a trial, a case, a definition or a constraint, not a solution
_NOT_A_SOLUTION = re.compile(r"\b(?:let|lets|set|setting|plug\w*|substitut\w*|evaluat\w*|take|taking|choos\w*|pick\w*|"
                             r"consider\w*|try\w*|test\w*|check\w*|if|suppose|assum\w*|say|case|cases|when|whenever|"
                             r"where|for|at|equations?|lines?|planes?|given|defin\w*|denot\w*|call\w*|example|"
                             r"instead|could|would|might|initial\w*|start\w*|each|every|any|all)\b", re.IGNORECASE)
_DERIVES = re.compile(r"\b(?:so|thus|hence|therefore|then|gives?|giving|get|gets|getting|got|becomes?|simplif\w*|"
                      r"means|implies|obtain\w*|yields?|multiply\w*|divid\w*|subtract\w*|add\w*|expand\w*|"
                      r"rearrang\w*|mov\w*|isolat\w*|collect\w*|combin\w*|cancel\w*|reduc\w*|equivalent)\b",
                      re.IGNORECASE)
_ALTERNATIVES = re.compile(r"\b(?:or|and|either|cases?|other|another|also|second|first|third|both|alternatively|"
                           r"similarly|likewise|(?:roots?|solutions?|zeros?|equations?|polynomials?)\s+(?:of|is|are))\b",
                           re.IGNORECASE)
_REWRITE_CUE = re.compile(r"\b(?:expand\w*|factor\w*|simplif\w*|rewrit\w*|distribut\w*|multiply\w* out|"
                          r"combin\w* like|complet\w* the square|identity)\b", re.IGNORECASE)

Node = tuple


class Unsupported(EvalError):
    """A side this channel does not model (functions, sums, matrices, complex numbers, oversize input)."""


# ---------------------------------------------------------------- parser: tokens -> tuples
class _Parser:
    def __init__(self, toks: list[Tok]):
        self.t = toks
        self.i = 0
        self.depth = 0

    def peek(self) -> Tok | None:
        return self.t[self.i] if self.i < len(self.t) else None

    def parse(self) -> Node:
        if not self.t or len(self.t) > MAX_SIDE_TOKENS:
            raise Unsupported("empty or oversize side")
        n = self.expr()
        if self.i != len(self.t):
            raise Unsupported(f"unexpected {self.t[self.i].text!r}")
        return n

    def _enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise Unsupported("nested too deeply")

    def expr(self) -> Node:
        self._enter()
        terms = [self.term()]
        while (tok := self.peek()) is not None and tok.kind == "op" and tok.text in "+-":
            self.i += 1
            r = self.term()
            terms.append(r if tok.text == "+" else ("neg", r))
        self.depth -= 1
        return terms[0] if len(terms) == 1 else ("+", tuple(terms))

    def term(self) -> Node:
        factors = [self.unary()]
        while (tok := self.peek()) is not None:
            if tok.kind == "op" and tok.text in "*/":
                self.i += 1
                r = self.unary()
                factors.append(r if tok.text == "*" else ("inv", r))
            elif tok.kind in ("lp", "frac", "sqrt", "binom", "var", "cmd", "num") or (
                    tok.kind == "lb" and self.t[self.i - 1].kind == "rb"):
                prev = self.t[self.i - 1]
                if tok.kind == "num" and prev.kind in ("num", "rp", "rb"):
                    raise Unsupported("two numbers side by side")
                if tok.kind == "frac" and prev.kind == "num":
                    raise Unsupported("mixed number or product")  # 3\frac{1}{2}: ambiguous
                if tok.kind == "lp" and prev.kind == "var" and prev.text in _FUNC_LETTERS:
                    raise Unsupported("function application")
                factors.append(self.unary())
            else:
                break
        return factors[0] if len(factors) == 1 else ("*", tuple(factors))

    def unary(self) -> Node:
        tok = self.peek()
        if tok is not None and tok.kind == "op" and tok.text in "+-":
            self.i += 1
            self._enter()
            n = self.unary()
            self.depth -= 1
            return ("neg", n) if tok.text == "-" else n
        return self.power()

    def power(self) -> Node:
        base = self.postfix()
        tok = self.peek()
        if tok is not None and tok.kind == "op" and tok.text == "^":
            self.i += 1
            self._enter()
            nxt = self.peek()
            exp = self.group() if nxt is not None and nxt.kind == "lb" else self.unary_atom()
            self.depth -= 1
            return ("^", base, exp)
        return base

    def unary_atom(self) -> Node:
        tok = self.peek()
        if tok is not None and tok.kind == "op" and tok.text == "-":
            self.i += 1
            return ("neg", self.postfix())
        return self.postfix()

    def postfix(self) -> Node:
        n = self.atom()
        while (tok := self.peek()) is not None and tok.kind == "fact":
            self.i += 1
            n = ("!", n)
        return n

    def group(self) -> Node:
        tok = self.peek()
        if tok is None:
            raise Unsupported("missing argument")
        if tok.kind == "lb":
            self.i += 1
            self._enter()
            n = self.expr()
            self.depth -= 1
            if (close := self.peek()) is None or close.kind != "rb":
                raise Unsupported("expected }")
            self.i += 1
            return n
        if (tok.kind == "num" and len(tok.text) == 1) or tok.kind == "var":
            self.i += 1
            return ("n", tok.value) if tok.kind == "num" else self._var(tok)
        raise Unsupported("missing braces")

    def _var(self, tok: Tok) -> Node:
        name = tok.text
        if name == "i" or name == "\\infty":
            raise Unsupported("imaginary unit or infinity")
        return ("v", name)

    def atom(self) -> Node:
        tok = self.peek()
        if tok is None:
            raise Unsupported("unexpected end")
        self.i += 1
        k = tok.kind
        if k == "num":
            if tok.pct:
                raise Unsupported("percent")
            return ("n", tok.value)
        if k == "var":
            return self._var(tok)
        if k == "cmd":
            if tok.text == "\\pi":
                return ("v", "\\pi")
            base = tok.text.split("_")[0]
            if base in _GREEK:
                return ("v", tok.text)
            raise Unsupported(f"command {tok.text!r}" if base not in FUNCTIONS else "function")
        if k in ("lp", "lb"):
            if k == "lp" and tok.text == "[":
                raise Unsupported("bracket")
            self._enter()
            n = self.expr()
            self.depth -= 1
            close = self.peek()
            if close is None or close.kind != ("rp" if k == "lp" else "rb") or (k == "lp" and close.text != ")"):
                raise Unsupported("unbalanced")
            self.i += 1
            return n
        if k == "frac":
            a = self.group()
            b = self.group()
            return ("*", (a, ("inv", b)))
        if k == "sqrt":
            nxt = self.peek()
            if nxt is not None and nxt.kind == "lp" and nxt.text == "[":
                raise Unsupported("n-th root")
            return ("sqrt", self.group())
        if k == "binom":
            return ("binom", self.group(), self.group())
        raise Unsupported(f"unexpected {tok.text!r}")


def parse_side(toks: list[Tok]) -> Node:
    for j, t in enumerate(toks[:-1]):  # f(x), f^{-1}(5), g^2(x): functions, not products
        if t.kind == "var" and t.text in _FUNC_LETTERS:
            nxt = toks[j + 1]
            if nxt.kind == "lp" or (nxt.kind == "op" and nxt.text == "^" and any(
                    x.kind == "lp" for x in toks[j + 2:j + 6])):
                raise Unsupported("function application")
    return _Parser(toks).parse()


def free_vars(n: Node) -> frozenset[str]:
    k = n[0]
    if k == "v":
        return frozenset((n[1],)) if n[1] != "\\pi" else frozenset()
    if k == "n":
        return frozenset()
    if k in ("+", "*"):
        return frozenset().union(*(free_vars(c) for c in n[1]))
    return frozenset().union(*(free_vars(c) for c in n[1:]))


# ---------------------------------------------------------------- evaluation (bounded, exact when possible)
def evaluate(n: Node, env: dict[str, Value]) -> Value:
    k = n[0]
    if k == "n":
        return n[1]
    if k == "v":
        if n[1] == "\\pi":
            return env.get("\\pi", math.pi)
        if n[1] not in env:
            raise Unsupported(f"unassigned {n[1]}")
        return env[n[1]]
    if k == "+":
        v: Value = Fraction(0)
        for c in n[1]:
            v = _add(v, evaluate(c, env))
        return v
    if k == "*":
        v = Fraction(1)
        for c in n[1]:
            v = _mul(v, evaluate(c, env))
        return v
    if k == "neg":
        return -evaluate(n[1], env)
    if k == "inv":
        return _div(Fraction(1), evaluate(n[1], env))
    if k == "^":
        b, e = evaluate(n[1], env), evaluate(n[2], env)
        if isinstance(e, Fraction) and e.denominator == 1 and abs(e) > 64 and free_vars(n[1]):
            raise Unsupported("large power of a variable expression")
        return _pow(b, e)
    if k == "sqrt":
        return _sqrt(evaluate(n[1], env))
    if k == "!":
        return _fact(evaluate(n[1], env))
    if k == "binom":
        return _binom(evaluate(n[1], env), evaluate(n[2], env))
    raise Unsupported(k)


# ---------------------------------------------------------------- polynomials: {monomial: coefficient}
Poly = dict[tuple[tuple[str, int], ...], Fraction]


def _padd(a: Poly, b: Poly, sign: int = 1) -> Poly:
    out = dict(a)
    for m, c in b.items():
        v = out.get(m, Fraction(0)) + sign * c
        if v:
            out[m] = v
        else:
            out.pop(m, None)
    return out


def _mono_mul(m1: tuple, m2: tuple) -> tuple:
    d = dict(m1)
    for v, e in m2:
        d[v] = d.get(v, 0) + e
    return tuple(sorted(d.items()))


def _pmul(a: Poly, b: Poly) -> Poly:
    if len(a) * len(b) > MAX_TERMS * 4:
        raise Unsupported("polynomial too large")
    out: Poly = {}
    for m1, c1 in a.items():
        for m2, c2 in b.items():
            m = _mono_mul(m1, m2)
            v = out.get(m, Fraction(0)) + c1 * c2
            if v:
                out[m] = v
            else:
                out.pop(m, None)
    if len(out) > MAX_TERMS or any(sum(e for _, e in m) > MAX_VAR_EXPONENT * 2 for m in out):
        raise Unsupported("polynomial too large")
    return out


def to_poly(n: Node) -> Poly | None:
    """Expanded polynomial of ``n`` (π as a variable), or None when ``n`` is not a polynomial."""
    k = n[0]
    if k == "n":
        return {(): n[1]} if n[1] else {}
    if k == "v":
        return {((n[1], 1),): Fraction(1)}
    if k == "+":
        out: Poly = {}
        for c in n[1]:
            p = to_poly(c)
            if p is None:
                return None
            out = _padd(out, p)
        return out
    if k == "*":
        out = {(): Fraction(1)}
        for c in n[1]:
            p = to_poly(c)
            if p is None:
                return None
            out = _pmul(out, p)
        return out
    if k == "neg":
        p = to_poly(n[1])
        return None if p is None else {m: -c for m, c in p.items()}
    if k == "inv":
        p = to_poly(n[1])
        if p is None or set(p) != {()} or not p[()]:
            return None
        return {(): 1 / p[()]}
    if k == "^":
        p = to_poly(n[1])
        if p is None or free_vars(n[2]):
            return None
        try:
            e = evaluate(n[2], {})
        except EvalError:
            return None
        if not (isinstance(e, Fraction) and e.denominator == 1 and 0 <= e <= MAX_VAR_EXPONENT):
            if p and set(p) == {()} and isinstance(e, Fraction):
                try:
                    v = _pow(p[()], e)
                except EvalError:
                    return None
                return {(): v} if isinstance(v, Fraction) else None
            return None
        out = {(): Fraction(1)}
        for _ in range(int(e)):
            out = _pmul(out, p)
        return out
    try:  # sqrt, factorial, binomial of constants
        if free_vars(n):
            return None
        v = evaluate(n, {})
    except EvalError:
        return None
    return {(): v} if isinstance(v, Fraction) else None


def _degree(p: Poly) -> int:
    return max((sum(e for _, e in m) for m in p), default=0)


def _top(p: Poly) -> Poly:
    d = _degree(p)
    return {m: c for m, c in p.items() if sum(e for _, e in m) == d}


def _unexpanded(n: Node) -> bool:
    """A product or power with a sum inside: the shape of a side that a rewrite expands or factors."""
    k = n[0]
    if k == "^":
        return n[1][0] == "+" or _unexpanded(n[1])
    if k == "*":
        return sum(1 for c in n[1] if c[0] == "+" or (c[0] == "^" and c[1][0] == "+")) >= 1 and len(n[1]) > 1 \
            or any(_unexpanded(c) for c in n[1])
    if k in ("+",):
        return any(_unexpanded(c) for c in n[1])
    if k == "neg":
        return _unexpanded(n[1])
    return False


def _close(a: Value, b: Value) -> bool:
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return a == b
    fa, fb = to_float(a), to_float(b)
    if math.isinf(fa) or math.isinf(fb):
        return False
    return abs(fa - fb) <= 1e-9 * max(1.0, abs(fa), abs(fb))


def _far(a: Value, b: Value) -> bool:
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return a != b
    fa, fb = to_float(a), to_float(b)
    if math.isinf(fa) or math.isinf(fb):
        return True
    return abs(fa - fb) > 1e-6 * max(1.0, abs(fa), abs(fb))


def identical(left: Node, right: Node, seed: int) -> bool | None:
    """True: an identity; False: not one; None: could not tell."""
    try:
        pl, pr = to_poly(left), to_poly(right)
    except EvalError:
        pl = pr = None
    if pl is not None and pr is not None:
        return not _padd(pl, pr, -1)
    names = sorted(free_vars(left) | free_vars(right))
    rng = random.Random(seed)
    same = diff = 0
    for k in range(N_POINTS + 2):  # signs alternate, so that sqrt(x^2) = x shows both branches
        env = {v: Fraction(rng.randint(2, 60), rng.choice((1, 1, 3, 7))) * (-1 if (k + j) % 2 else 1)
               for j, v in enumerate(names)}
        try:
            a, b = evaluate(left, env), evaluate(right, env)
        except (EvalError, ZeroDivisionError, OverflowError, ValueError):
            continue
        if _close(a, b):
            same += 1
        elif _far(a, b):
            diff += 1
        else:
            return None
        if same + diff >= N_POINTS:
            break
    if same + diff < 2 or (same and diff):
        return None
    return same > 0


# ---------------------------------------------------------------- the channel
@dataclass
class _Link:
    step: int
    text: str
    left: Node
    right: Node
    vars: frozenset[str]
    kind: str  # "rewrite" or "equation"


@dataclass
class _State:
    values: dict[str, list[Value]] = field(default_factory=dict)
    first_assigned: dict[str, int] = field(default_factory=dict)
    pending: list[_Link] = field(default_factory=list)
    substitutions: list[_Link] = field(default_factory=list)
    constrained: set[str] = field(default_factory=set)  # variables an equation (not an identity) relates
    chains: int = 0
    equations: list[_Link] = field(default_factory=list)  # stated equations (question and steps), not identities
    # values the current step assigns (not hypothetically): name -> [(value, decimals shown)]
    stated: dict[str, list[tuple[Value, int]]] = field(default_factory=dict)
    derives: bool = False  # the text before the current equation says it is derived ("so", "we get"), no cases


def _assign(state: _State, name: str, value: Value, step: int) -> None:
    vals = state.values.setdefault(name, [])
    state.first_assigned.setdefault(name, step)
    if not any(_close(value, v) for v in vals):
        vals.append(value)


def _satisfied(link: _Link, state: _State) -> bool | None:
    """Whether some combination of the assigned values makes the equality true (None: not all assigned)."""
    names = sorted(link.vars)
    pools = [state.values.get(v, [])[:MAX_VALUES] for v in names]
    if not all(pools):
        return None
    tried = 0
    for combo in itertools.product(*pools):
        tried += 1
        if tried > MAX_COMBOS:
            return True  # too many readings: do not accuse
        env = dict(zip(names, combo, strict=True))
        try:
            a, b = evaluate(link.left, env), evaluate(link.right, env)
        except (EvalError, ZeroDivisionError, OverflowError, ValueError):
            return True
        if not _far(a, b):
            return True
    return False


def _side_text(toks: list[Tok]) -> str:
    return " ".join(t.text for t in toks).replace(" ^ ", "^").replace("{ ", "{").replace(" }", "}")


_IMPLIES = frozenset(("\\Rightarrow", "\\Longrightarrow", "\\rightarrow", "\\implies", "\\iff",
                      "\\Leftrightarrow", "\\Longleftrightarrow", "\\Leftarrow", "\\to"))


def _chains_of(seg: str) -> list[tuple[list[list[Tok]], bool]]:
    """Chains of a math span, each with whether an implication arrow touches it (an equation being
    transformed: ``a^3 + b^3 = (a+b)^3 \\Rightarrow ab(a+b) = 0``)."""
    toks = latex_tokens(_with_vars([t for t in tokenize(seg) if t.kind != "ann"], latex=True))
    chains: list[tuple[list[list[Tok]], bool]] = []
    cur: list[list[Tok]] = [[]]
    arrow_before = False
    for t in toks + [Tok("brk", ",")]:
        if t.kind == "brk" or t.kind == "word":
            arrow = t.text in _IMPLIES
            if len(cur) >= 2:
                chains.append((cur, arrow_before or arrow))
            cur = [[]]
            arrow_before = arrow
        elif t.kind == "eq":
            cur.append([] if not t.approx else [Tok("brk", "≈")])
        else:
            cur[-1].append(t)
    return chains


_PLAIN_BREAK = re.compile(r"[A-Za-z]{2,}|[,;:!?\n]|\.(?!\d)")
_ANNOTATION_RE = re.compile(ANNOTATION)
_PLAIN_VAR = re.compile(r"\d[A-Za-z](?![A-Za-z])|(?<![A-Za-z])[A-Za-z]\s*[\^*/+\-=)]|[\^*/+\-=(]\s*[A-Za-z](?![A-Za-z])")
_PLAIN_NOT = re.compile(r"\d\s+[A-Za-z]|[A-Za-z]\s+\d|\d\s*[xX]\s*\d|[<>]=?|==|=\s*$|^\s*=")


def _math_segments(text: str) -> tuple[tuple[str, bool], ...]:
    """``text`` as (segment, is_math) pieces: its LaTeX math spans (:func:`verifier.arith.split_math`), or, in a
    text without LaTeX or dollar signs, its plain algebra (``x+2x=30``, ``4(3+2x)=12+8x``, ``3x = 30``): a
    stretch between words and clause punctuation (GSM8K annotations dropped) that has an ``=`` and a one-letter variable
    next to a number or an operator. Letters spaced from numbers (``0.2 x 50``, ``a 3``) are prose, not
    algebra: ``x`` may be a times sign and ``a`` an article."""
    segments = split_math(text)
    if any(m for _, m in segments) or "$" in text or "\\" in text:
        return segments
    text = _ANNOTATION_RE.sub("", normalize_chars(text))  # x=<<26=26>>26: the result is what is said
    out: list[tuple[str, bool]] = []
    pos = 0
    for b in itertools.chain(_PLAIN_BREAK.finditer(text), (None,)):
        end = b.start() if b is not None else len(text)
        chunk = text[pos:end]
        if "=" in chunk and _PLAIN_VAR.search(chunk) and not _PLAIN_NOT.search(chunk):
            lead = len(chunk) - len(chunk.lstrip())
            out += [(chunk[:lead], False), (chunk.strip(), True)]
        else:
            out.append((chunk, False))
        if b is not None:
            out.append((b.group(0), False))
            pos = b.end()
    merged: list[tuple[str, bool]] = []
    for seg, is_math in out:
        if merged and not is_math and not merged[-1][1]:
            merged[-1] = (merged[-1][0] + seg, False)
        elif seg or is_math:
            merged.append((seg, is_math))
    return tuple((seg, m) for seg, m in merged if m or seg.strip()) or ((text, False),)


def _calc(link_text: str, sides: list[str], ok: bool, error: str = "") -> Calculation:
    return Calculation(text=link_text, sides=sides, values=[None] * len(sides), ok=ok, result=None,
                       error=error, algebraic=True)


_NONCOMMUTATIVE = re.compile(r"matri(?:x|ces)|vectors?\b|\\(?:begin\{[pbvB]?matrix|mathbf|vec|overrightarrow)",
                             re.IGNORECASE)
_LIST_MATH = re.compile(r"\\(?:pm|mp|ldots|cdots|dots|overline|begin\{array|neq|ne)\b|\\begin\{array\}")


def check_algebra(steps: list[str], check: Callable[[], None] | None = None,
                  question: str = "") -> list[list[Calculation]]:
    """Algebraic equalities of each step, checked (see the module docstring); one list per step.

    Equations of the question and of earlier steps (``a + b + c = 0``, ``\\omega^7 = 1``) make their
    variables *constrained*: a rewrite in them may rely on the constraint, so it is not flagged."""
    out: list[list[Calculation]] = [[] for _ in steps]
    if _NONCOMMUTATIVE.search(question[:20000]) or any(_NONCOMMUTATIVE.search(s[:20000]) for s in steps):
        return out  # matrices and vectors: products do not commute, the letters are not numbers
    state = _State()
    if question and "=" in question and len(question) <= 20000:
        for seg, is_math in _math_segments(question):
            if is_math and "=" in seg and len(seg) <= MAX_SEGMENT_CHARS:
                for chain, _ in _chains_of(seg):
                    _check_chain(chain, -1, state, None, True, True)
    for i, step in enumerate(steps):
        if i > 0 and _CONTINUES.match(step):
            _check_continuation(steps[i - 1], step, i, out, state.equations)
        if "=" not in step or not re.search(r"[A-Za-z](?:_\{?\w+\}?)?\s*[=+\-^)}]|[=+\-^({]\s*[A-Za-z]|\\pi|\\frac", step):
            continue
        segments = _math_segments(step) if len(step) <= 20000 else ()
        if not any(m for _, m in segments):
            continue
        prose = " ".join(t for t, m in segments if not m)
        eq_cue = bool(_EQUATION_CUE.search(prose))
        rw_cue = bool(_REWRITE_CUE.search(prose))
        hypothetical = bool(_HYPOTHETICAL.search(prose))
        solved = not hypothetical and not _NOT_A_SOLUTION.search(prose)
        alternatives = bool(_ALTERNATIVES.search(prose))
        lead: list[str] = []  # the text since the last equation: what says how the next one was obtained
        for seg, is_math in segments:
            if not is_math or "=" not in seg or len(seg) > MAX_SEGMENT_CHARS:
                lead.append(seg)
                continue
            said = " ".join(lead)
            state.derives = not hypothetical and bool(_DERIVES.search(said)) and not _ALTERNATIVES.search(said)
            lead = []
            for chain, arrow in _chains_of(seg):
                state.chains += 1
                if state.chains > MAX_CHAINS:
                    return out
                if check is not None:
                    check()
                listed = bool(_LIST_MATH.search(seg))  # a table, a list or a +- pair: no single values
                _check_chain(chain, i, state, out, arrow or (eq_cue and not rw_cue), hypothetical,
                             solved and not listed, record=not (hypothetical or listed or alternatives))
        _check_stated_values(state, i, out)
    # decided once every value is known: a rewrite that some assigned values satisfy is a solved equation;
    # a substitution must hold for the values, unless a variable took another value later on
    for link in state.pending:
        sat = _satisfied(link, state)
        out[link.step].append(_calc(link.text, link.text.split(" = "), bool(sat),
                                    "" if sat else f"{link.text} is not an identity"))
    for link in state.substitutions:
        if not all(len(state.values.get(v, ())) == 1 for v in link.vars):
            continue
        sat = _satisfied(link, state)
        if sat is None:
            continue
        out[link.step].append(_calc(link.text, link.text.split(" = "), sat, "" if sat else (
            f"{link.text} is wrong for " + ", ".join(f"{v} = {_fmt(state.values[v][0])}" for v in sorted(link.vars)))))
    return out


def _check_stated_values(state: _State, step: int, out: list[list[Calculation]]) -> None:
    """The values step ``step`` states ("so $x = -2$", "$y = 15.6$") against every equation stated before
    them (in the question, an earlier step or earlier in this step) whose variables this step gives values
    to, all of them: one that no combination of the stated values satisfies, within the rounding of the
    stated digits, is a wrong solution of it. Equations with a variable the step does not state (it may
    hold a value from another case) are left alone."""
    stated, state.stated = state.stated, {}
    if not stated:
        return
    latest: dict[frozenset, int] = {}
    for eq in state.equations:
        latest[eq.vars] = max(latest.get(eq.vars, -2), eq.step)
    for eq in state.equations:
        if eq.step < latest[eq.vars] or not eq.vars or len(eq.vars) > MAX_SOLVED_VARS or not eq.vars <= stated.keys() or (
                eq.step >= 0 and step - eq.step > SOLVED_WINDOW) or (eq.step < 0 and not QUESTION_EQS):
            continue
        if all(len(stated[v]) == 1 and eq.step == step and _is_definition(eq, v) for v in eq.vars):
            continue
        if _holds_for_some(eq, stated) is False:
            vals = ", ".join(f"{v} = {_fmt(*stated[v][0])}" for v in sorted(eq.vars))
            where = "the question" if eq.step < 0 else f"step {eq.step + 1}"
            out[step].append(_calc(eq.text, eq.text.split(" = "), False,
                                   f"{vals} does not satisfy {eq.text} ({where})"))
            return


# a step that goes on with the previous step's last expression: "Which is $\frac{1}{460}$.", "$= 2x + 3$"
_CONTINUES = re.compile(r"\s*(?:(?:and|so),?\s+)?(?:(?:which|that|this|it)(?:'s|\s+is|\s+equals|\s+simplifies\s+to|"
                        r"\s+gives(?:\s+us)?|\s+becomes|\s+comes\s+out\s+to|\s+reduces\s+to|\s+evaluates\s+to)"
                        r"\s*(?:just\s+|simply\s+|equal\s+to\s+)?(?=\$|\\\[|\\\()|(?=\$\s*=|\\\[\s*=))", re.IGNORECASE)


def _explained(a: Node, b: Node, equations: list[_Link], seed: int) -> bool:
    """Whether ``a - b`` is a constant multiple of ``left - right`` of an equation stated before (the
    question's ``A+M+C=12`` explains ``... - (A+M+C) - 1`` = ``... - 12 - 1``): checked at three random
    rational points, the ratio the same at each."""
    rng = random.Random(seed)
    own = free_vars(a) | free_vars(b)
    for eq in equations[-MAX_EXPLAINING_EQUATIONS:]:
        names = sorted(own | eq.vars)
        ratios: list[Value] = []
        for _ in range(3):
            env = {v: Fraction(rng.randint(2, 97), rng.randint(1, 13)) for v in names}
            try:
                d = evaluate(a, env) - evaluate(b, env)
                e = evaluate(eq.left, env) - evaluate(eq.right, env)
            except (EvalError, ZeroDivisionError, OverflowError, ValueError, TypeError):
                break
            if e == 0 or _close(e, 0):
                break
            ratios.append(d / e)
        if len(ratios) == 3 and not _close(ratios[0], 0) and all(_close(r, ratios[0]) for r in ratios[1:]):
            return True
    return False


def _check_continuation(prev: str, step: str, i: int, out: list[list[Calculation]],
                        equations: list[_Link] | None = None) -> None:
    """A step that goes on with the previous step's last expression ("Which is $X$.", "$= X$") must equal
    it: numbers up to the rounding of the digits shown, expressions in the same variables as an identity
    or as a use of an equation stated before (:func:`_explained`: the question's ``A+M+C=12`` lets
    ``(A+1)(M+1)(C+1)-(A+M+C)-1`` go on as ``(A+1)(M+1)(C+1)-12-1``)."""
    m = _CONTINUES.match(step)
    if not m or len(prev) > 20000 or len(step) > 20000:
        return
    prev_segs = split_math(prev)
    k_last = next((k for k in range(len(prev_segs) - 1, -1, -1) if prev_segs[k][1]), None)
    first = next((seg for seg, is_math in split_math(step[m.end():]) if is_math), None)
    if k_last is None or first is None or len(prev_segs[k_last][0]) > MAX_SEGMENT_CHARS or \
            len(first) > MAX_SEGMENT_CHARS:
        return
    tail = "".join(seg for seg, _ in prev_segs[k_last + 1:])
    if re.sub(r"[\s.,;:!)]", "", tail):
        return  # the previous step goes on after its last expression ("multiply $x+y$ by 2.")
    before, after = _sides(prev_segs[k_last][0]), _sides(first)
    if not before or not after or (len(after) > 1 and not first.lstrip().startswith("=")):
        return  # the step states an equation of its own: a transformation, not a value
    if len(before) == 1:
        lead = "".join(seg for seg, _ in prev_segs[:k_last])
        if not _VALUE_LEAD.search(lead):
            return  # "$x+y$" named, not computed
    else:
        try:
            pen = parse_side(before[-2])
        except (EvalError, RecursionError):
            return
        if pen[0] != "v" and free_vars(pen):
            return  # an equation in variables ("$0 - 2\sqrt{a} = -\sqrt{a}(6-a)$"), not a value
        if pen[0] == "v" and len(before) == 2 and len(before[-1]) == 1:
            return  # "when $n = 9$": a value given, not an expression that the next step goes on with
    a_toks, b_toks = before[-1], after[0]
    try:
        a, b = parse_side(a_toks), parse_side(b_toks)
    except (EvalError, RecursionError):
        return
    va, vb = free_vars(a), free_vars(b)
    if va != vb:
        return
    text = f"{_side_text(a_toks)} = {_side_text(b_toks)}"
    if va:
        verdict = identical(a, b, zlib.crc32(text.encode()))
        if verdict is False and equations and _explained(a, b, equations, zlib.crc32(text.encode())):
            verdict = True
        if verdict is not None:
            out[i].append(_calc(text, text.split(" = "), verdict, "" if verdict else f"{text} is not an identity"))
        return
    try:
        x, y = evaluate(a, {}), evaluate(b, {})
    except (EvalError, ZeroDivisionError, OverflowError, ValueError):
        return
    decimals = max((t.decimals for t in (*a_toks, *b_toks) if t.kind == "num"), default=0)
    ok = values_match(x, y, decimals) or values_match(y, x, decimals)
    out[i].append(_calc(text, text.split(" = "), ok, "" if ok else f"{text} does not hold"))


_VALUE_LEAD = re.compile(r"(?:\b(?:is|are|was|equals?|gives?(?:\s+us)?|get|got|becomes?|be|have|has|to)|[:=])\s*$",
                         re.IGNORECASE)


def _sides(seg: str) -> list[list[Tok]]:
    """The sides of a math span split at ``=`` (the last chain; approximate signs end it)."""
    toks = latex_tokens(_with_vars([t for t in tokenize(seg) if t.kind != "ann"], latex=True))
    sides: list[list[Tok]] = [[]]
    for t in toks:
        if t.kind == "eq" and not t.approx:
            sides.append([])
        elif t.kind in ("brk", "word") or (t.kind == "eq" and t.approx):
            sides = [[]]
        else:
            sides[-1].append(t)
    return [x for x in sides if x]


def _record_equation(state: _State, eq: _Link, out: list[list[Calculation]]) -> None:
    """Remember a stated equation; one in a single variable must keep a root of the latest equation in that
    variable stated in this step or the one before (``n^2 - n = 2n^2 - 42n + 400`` cannot become
    ``20n = 200``): two polynomial equations with no common root (a constant gcd) are not one derived from
    the other. Equations with decimals (rounded coefficients) are only remembered."""
    prev = state.equations[-1] if state.equations else None
    state.equations.append(eq)
    if not state.derives or prev is None or prev.vars != eq.vars or not 0 <= eq.step - prev.step <= 1 \
            or len(eq.vars) != 1 or _DECIMAL.search(eq.text) or _DECIMAL.search(prev.text):
        return
    (var,) = eq.vars
    p_new, p_old = _univariate(eq, var), _univariate(prev, var)
    if p_new is None or p_old is None or len(p_new) < 2 or len(p_old) < 2:
        return
    if len(_poly_gcd(p_new, p_old)) < 2:
        out[eq.step].append(_calc(eq.text, eq.text.split(" = "), False,
                                  f"{eq.text} keeps no root of {prev.text} (step {prev.step + 1})"
                                  if prev.step >= 0 else f"{eq.text} keeps no root of {prev.text} (the question)"))


_DECIMAL = re.compile(r"\d\.\d|\.\d")


def _univariate(eq: _Link, var: str) -> list[Fraction] | None:
    """Coefficients (constant first) of ``left - right`` as a polynomial in ``var``, or None."""
    try:
        pl, pr = to_poly(eq.left), to_poly(eq.right)
    except EvalError:
        return None
    if pl is None or pr is None:
        return None
    diff = _padd(pl, pr, -1)
    coefs: dict[int, Fraction] = {}
    for mono, c in diff.items():
        if any(v != var for v, _ in mono):
            return None  # pi or another symbol
        coefs[sum(e for _, e in mono)] = c
    if not coefs:
        return None  # an identity
    return [coefs.get(d, Fraction(0)) for d in range(max(coefs) + 1)]


def _poly_gcd(a: list[Fraction], b: list[Fraction]) -> list[Fraction]:
    """Monic gcd of two univariate polynomials over the rationals (coefficients constant first)."""
    def trim(p):
        while p and p[-1] == 0:
            p = p[:-1]
        return p
    a, b = trim(list(a)), trim(list(b))
    while b:
        r = list(a)
        while len(r) >= len(b) and r:
            f = r[-1] / b[-1]
            shift = len(r) - len(b)
            for j, c in enumerate(b):
                r[shift + j] -= f * c
            r = trim(r)
        a, b = b, r
    return [c / a[-1] for c in a] if a else a


def _is_definition(eq: _Link, var: str) -> bool:
    return (eq.left[0] == "v" and eq.left[1] == var) or (eq.right[0] == "v" and eq.right[1] == var)


def _holds_for_some(eq: _Link, stated: dict[str, list[tuple[Value, int]]]) -> bool | None:
    """True when some combination of the stated values satisfies ``eq`` (a value with d shown decimals
    stands for the interval of its rounding), False when none does, None when it cannot be evaluated."""
    names = sorted(eq.vars)
    pools = [stated[v][:MAX_VALUES] for v in names]
    undecided = False
    for n_tried, combo in enumerate(itertools.product(*pools)):
        if n_tried >= MAX_COMBOS:
            return None
        try:
            diff = _residual(eq, {v: val for v, (val, _) in zip(names, combo, strict=True)})
            if diff is None or not _far(diff[0], diff[1]):
                return True
            widths = [0.5 * 10.0 ** -d if d else 0.0 for _, d in combo]
            if any(widths):  # rounded values: the residual's sign changes, or moves by more than it is
                base = float(diff[0]) - float(diff[1])
                corners = []
                for signs in itertools.product((-1, 1), repeat=len(names)):
                    env = {v: float(val) + s * w for v, (val, _), w, s in zip(names, combo, widths, signs, strict=True)}
                    d = _residual(eq, env)
                    if d is None:
                        raise Unsupported("corner")
                    corners.append(float(d[0]) - float(d[1]))
                if any(c * base <= 0 for c in corners) or max(abs(c - base) for c in corners) >= abs(base):
                    return True
        except (EvalError, ZeroDivisionError, OverflowError, ValueError):
            undecided = True
    return None if undecided else False


def _residual(eq: _Link, env: dict[str, Value]) -> tuple[Value, Value] | None:
    a, b = evaluate(eq.left, env), evaluate(eq.right, env)
    if isinstance(a, complex) or isinstance(b, complex):
        return None
    return a, b


def _fmt(v: Value, decimals: int = 0) -> str:
    if decimals:
        return f"{to_float(v):.{decimals}f}"
    if isinstance(v, Fraction):
        return str(v.numerator) if v.denominator == 1 else f"{v.numerator}/{v.denominator}"
    return f"{v:.6g}"


def _check_chain(chain: list[list[Tok]], step: int, state: _State, out: list[list[Calculation]] | None,
                 equation_talk: bool, hypothetical: bool = False, solved: bool = False, record: bool = True) -> None:
    """Check one chain ``A = B = C`` of step ``step`` (``out`` None: only learn the question's equations)."""
    links = _chain_links(chain)
    if not links:
        return
    seed = zlib.crc32(" ".join(_side_text(s) for s in chain).encode())
    verdicts: dict[int, bool | None] = {k: identical(a, b, seed + k) for k, a, b, va, vb in links if va and va == vb}
    anchored = any(v is True and _side_text(chain[k]) != _side_text(chain[k + 1]) for k, v in verdicts.items())
    for k, a, b, va, vb in links:
        if not va and not vb:
            continue  # numbers only: verifier.arith checks it
        _learn_assignments(state, a, b, va, vb, step, (chain[k], chain[k + 1]), out is not None and solved)
        if (a[0] == "v" and not vb) or (b[0] == "v" and not va):
            continue
        sides = [_side_text(chain[k]), _side_text(chain[k + 1])]
        text = f"{sides[0]} = {sides[1]}"
        equation = _Link(step, text, a, b, frozenset(va | vb), "equation")
        if out is None:  # the question: learn its relations only
            if not (va and va == vb and verdicts.get(k) is True):
                state.constrained |= va | vb
                state.equations.append(equation)
            continue
        if va and va == vb:
            verdict = verdicts.get(k)
            if verdict is True:
                out[step].append(_calc(text, sides, True))
            elif verdict is None or (va & state.constrained):
                state.constrained |= va
                if verdict is False and record:
                    _record_equation(state, equation, out)
            elif (_rewrite_shaped(a, b) and not equation_talk) or anchored:
                state.pending.append(_Link(step, text, a, b, va, "rewrite"))
            else:
                state.constrained |= va  # an equation in these variables
                if record:
                    _record_equation(state, equation, out)
            continue
        state.constrained |= va | vb
        if record:
            _record_equation(state, equation, out)
        if not hypothetical:  # "if b were 2, b^5 = 2^5 would be ...": other values than the solution's
            _add_substitution(state, chain, k, a, b, va, vb, text, step)


def _chain_links(chain: list[list[Tok]]) -> list[tuple[int, Node, Node, set, set]]:
    """``(k, side k, side k + 1, their free variables)`` for each ``=`` of the chain whose two sides parse."""
    nodes: list[Node | None] = []
    for side in chain:
        if not side or side[0].kind == "brk":
            nodes.append(None)
            continue
        try:
            nodes.append(parse_side(side))
        except (EvalError, RecursionError):
            nodes.append(None)
    return [(k, a, b, free_vars(a), free_vars(b)) for k, (a, b) in enumerate(zip(nodes, nodes[1:], strict=False))
            if a is not None and b is not None]


def _learn_assignments(state: _State, a: Node, b: Node, va: set, vb: set, step: int,
                       toks: tuple[list[Tok], list[Tok]] = ([], []), stated: bool = False) -> None:
    """An assignment: "x = 5", "a = -3 + 1" (a variable on one side, no variable on the other). With
    ``stated`` it is also one of the step's own claims, checked against the equations stated so far."""
    for var_side, val_side, vv, vt in ((a, b, vb, toks[1]), (b, a, va, toks[0])):
        if var_side[0] == "v" and var_side[1] != "\\pi" and not vv:
            try:
                value = evaluate(val_side, {})
            except EvalError:
                continue
            _assign(state, var_side[1], value, step)
            if stated:
                decimals = max((t.decimals for t in vt if t.kind == "num"), default=0)
                state.stated.setdefault(var_side[1], []).append((value, decimals))


def _rewrite_shaped(a: Node, b: Node) -> bool:
    """Whether ``a = b`` looks like a rewrite (same degree, a shared leading term, one side unexpanded)
    rather than an equation to solve."""
    try:
        pa, pb = to_poly(a), to_poly(b)
    except EvalError:
        return False
    return (pa is not None and pb is not None and _degree(pa) == _degree(pb) >= 1
            and any(pb.get(m) == c for m, c in _top(pa).items())
            and (_unexpanded(a) or _unexpanded(b)))


def _add_substitution(state: _State, chain: list[list[Tok]], k: int, a: Node, b: Node, va: set, vb: set,
                      text: str, step: int) -> None:
    """A substitution: "a + b = -3 + 3" (an expression in variables the solution has already given one
    value each = the same expression with those values in). An equation to solve ("2x - 3 = 1.8") or
    one whose variables are unknown or take several values is left unchecked."""
    num_side, num_toks = (b, chain[k + 1]) if not vb else (a, chain[k]) if not va else (None, None)
    names = va | vb
    if num_side is None or len(num_toks) < 2 or not any(t.kind in ("op", "lp", "frac") for t in num_toks):
        return
    if not all(len(state.values.get(v, ())) == 1 for v in names):
        return
    state.substitutions.append(_Link(step, text, a, b, names, "equation"))
