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
    split_math,
    tokenize,
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
    return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(a)), abs(float(b)))


def _far(a: Value, b: Value) -> bool:
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return a != b
    return abs(float(a) - float(b)) > 1e-6 * max(1.0, abs(float(a)), abs(float(b)))


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


def _calc(link_text: str, sides: list[str], ok: bool, error: str = "") -> Calculation:
    return Calculation(text=link_text, sides=sides, values=[None] * len(sides), ok=ok, result=None,
                       error=error, algebraic=True)


def check_algebra(steps: list[str], check: Callable[[], None] | None = None,
                  question: str = "") -> list[list[Calculation]]:
    """Algebraic equalities of each step, checked (see the module docstring); one list per step.

    Equations of the question and of earlier steps (``a + b + c = 0``, ``\\omega^7 = 1``) make their
    variables *constrained*: a rewrite in them may rely on the constraint, so it is not flagged."""
    out: list[list[Calculation]] = [[] for _ in steps]
    state = _State()
    if question and "=" in question and len(question) <= 20000:
        for seg, is_math in split_math(question):
            if is_math and "=" in seg and len(seg) <= MAX_SEGMENT_CHARS:
                for chain, _ in _chains_of(seg):
                    _check_chain(chain, -1, state, None, True, True)
    for i, step in enumerate(steps):
        if "=" not in step or not re.search(r"[A-Za-z]\s*[=+\-^)}]|[=+\-^({]\s*[A-Za-z]|\\pi|\\frac", step):
            continue
        segments = split_math(step) if len(step) <= 20000 else ()
        if not any(m for _, m in segments):
            continue
        prose = " ".join(t for t, m in segments if not m)
        eq_cue = bool(_EQUATION_CUE.search(prose))
        rw_cue = bool(_REWRITE_CUE.search(prose))
        hypothetical = bool(_HYPOTHETICAL.search(prose))
        for seg, is_math in segments:
            if not is_math or "=" not in seg or len(seg) > MAX_SEGMENT_CHARS:
                continue
            for chain, arrow in _chains_of(seg):
                state.chains += 1
                if state.chains > MAX_CHAINS:
                    return out
                if check is not None:
                    check()
                _check_chain(chain, i, state, out, arrow or (eq_cue and not rw_cue), hypothetical)
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


def _fmt(v: Value) -> str:
    if isinstance(v, Fraction):
        return str(v.numerator) if v.denominator == 1 else f"{v.numerator}/{v.denominator}"
    return f"{v:.6g}"


def _check_chain(chain: list[list[Tok]], step: int, state: _State, out: list[list[Calculation]] | None,
                 equation_talk: bool, hypothetical: bool = False) -> None:
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
        _learn_assignments(state, a, b, va, vb, step)
        if (a[0] == "v" and not vb) or (b[0] == "v" and not va):
            continue
        if out is None:  # the question: learn its relations only
            if not (va and va == vb and verdicts.get(k) is True):
                state.constrained |= va | vb
            continue
        sides = [_side_text(chain[k]), _side_text(chain[k + 1])]
        text = f"{sides[0]} = {sides[1]}"
        if va and va == vb:
            verdict = verdicts.get(k)
            if verdict is True:
                out[step].append(_calc(text, sides, True))
            elif verdict is None or (va & state.constrained):
                state.constrained |= va
            elif (_rewrite_shaped(a, b) and not equation_talk) or anchored:
                state.pending.append(_Link(step, text, a, b, va, "rewrite"))
            else:
                state.constrained |= va  # an equation in these variables
            continue
        state.constrained |= va | vb
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


def _learn_assignments(state: _State, a: Node, b: Node, va: set, vb: set, step: int) -> None:
    """An assignment: "x = 5", "a = -3 + 1" (a variable on one side, no variable on the other)."""
    for var_side, val_side, vv in ((a, b, vb), (b, a, va)):
        if var_side[0] == "v" and var_side[1] != "\\pi" and not vv:
            try:
                _assign(state, var_side[1], evaluate(val_side, {}), step)
            except EvalError:
                pass


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
