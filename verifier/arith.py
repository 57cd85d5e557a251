"""Safe exact arithmetic over model text: a tokenizer, a bounded parser and calculation extraction.

Nothing here calls ``eval``, ``exec``, ``sympify`` or ``parse_expr``: text is tokenized by one regular
expression and parsed by a small recursive-descent parser over numbers, ``+ - * / ^``, parentheses,
``\\frac``/``\\dfrac``/``\\tfrac``, ``\\sqrt``, ``\\binom``, ``!`` and percentages. Values are
``fractions.Fraction`` when exact and ``float`` when not (irrational roots, fractional powers). Every
operation is bounded (literal digits, exponent size, result size, nesting depth), so ``9**9**9`` or
10,000 nested parentheses fail fast with :class:`EvalError` instead of hanging.

Example::

    >>> [(c.text, c.ok) for c in extract_calculations("She sold 48/2 = <<48/2=24>>24 clips.")]
    [('48 / 2=24', True), ('48 / 2 = 24', True)]
    >>> evaluate("\\\\frac{3}{4} \\\\cdot 8")
    Fraction(6, 1)
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from typing import NamedTuple

Value = Fraction | float

MAX_LITERAL_DIGITS = 200
MAX_RESULT_BITS = 4000
MAX_EXPONENT = 2000
MAX_DEPTH = 60
MAX_FACTORIAL = 200
MAX_RUN_TOKENS = 80


class EvalError(ValueError):
    """The expression cannot be evaluated safely (malformed, too large, not numeric)."""


class NotNumeric(EvalError):
    """The expression is well formed but contains a variable or an unknown symbol."""


# ---------------------------------------------------------------- unicode digits
_SYMBOLS = {"−": "-", "–": "-", "×": "*", "·": "*", "÷": "/", "⋅": "*", "∗": "*",
            "\u00a0": " ", "\u2009": " ", "\u202f": " "}
_NON_ASCII_RE = re.compile(r"[^\x00-\x7f]")


def _map_char(m: re.Match) -> str:
    ch = m.group(0)
    if ch in _SYMBOLS:
        return _SYMBOLS[ch]
    if unicodedata.category(ch) == "Nd":
        return str(unicodedata.digit(ch))
    return ch


_ROOT_RE = re.compile(r"√\s*(\d+(?:\.\d+)?)")


def normalize_chars(text: str) -> str:
    """Map unicode decimal digits to ASCII, typographic operators to ASCII ones and ``√25`` to ``\\sqrt{25}``."""
    if text.isascii():
        return text
    if "√" in text:
        text = _ROOT_RE.sub(r"\\sqrt{\1}", text).replace("√", "\\sqrt ")
    return _NON_ASCII_RE.sub(_map_char, text)


# ---------------------------------------------------------------- tokenizer
class Tok(NamedTuple):
    kind: str  # num op lp rp lb rb eq frac sqrt binom fact var word cmd brk ann
    text: str
    value: Fraction | None = None
    pct: bool = False
    decimals: int = 0
    approx: bool = False


_NUM = r"(?:\d{1,3}(?:(?:,|\{,\})\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
_TOKEN_RE = re.compile(
    r"(?P<ws>\s+|\\[,;:! ]|~|\\quad|\\qquad|\\left|\\right|\\big|\\Big|\\bigg|\\Bigg|\\displaystyle|\\\$|\$)"
    r"|(?P<ann><<[^<>]{0,400}>>)"
    r"|(?P<frac12>\\[dt]?frac\s*(?P<fa>\d)\s*(?P<fb>\d))"
    r"|(?P<ordinal>\d+(?:st|nd|rd|th)\b)"
    r"|(?P<mixed>(?<![\d.,/*^])(?P<mw>\d+) (?P<mn>\d+)/(?P<md>\d+)(?![\d.]|\s*[*/^(]))"
    rf"|(?P<number>(?P<num>{_NUM})(?P<pct>\s*\\?%)?)"
    r"|(?P<text>\\(?:text|mathrm|textbf|mbox|operatorname|mathbf|textit)\s*\{[^{}]{0,80}\})"
    r"|(?P<cmd>\\[A-Za-z]+)"
    r"|(?P<pow>\*\*)"
    r"|(?P<op>[-+*/^])"
    r"|(?P<eq>=|≈)"
    r"|(?P<lp>[(\[])|(?P<rp>[)\]])|(?P<lb>\{)|(?P<rb>\})"
    r"|(?P<fact>!)"
    r"|(?P<word>[A-Za-z]+(?:/[A-Za-z]+)*)"
    r"|(?P<other>.)",
    re.DOTALL,
)
_CMD_KIND = {
    "\\frac": "frac", "\\dfrac": "frac", "\\tfrac": "frac", "\\cfrac": "frac",
    "\\sqrt": "sqrt", "\\binom": "binom", "\\dbinom": "binom", "\\tbinom": "binom",
    "\\cdot": "op*", "\\times": "op*", "\\ast": "op*", "\\div": "op/",
    "\\approx": "eqa", "\\simeq": "eqa",
}
_WORD_OPS = {"times": "*", "plus": "+", "minus": "-", "x": "*", "X": "*"}
UNIT_BRIDGE_MAX = 2


def _num_tok(text: str, pct: bool) -> Tok:
    clean = text.replace("{,}", "").replace(",", "")
    digits = len(clean.replace(".", ""))
    if digits > MAX_LITERAL_DIGITS:
        return Tok("brk", text)
    if "." in clean:
        ip, fp = clean.split(".", 1)
        decimals = len(fp)
        value = Fraction(int(ip or "0") * 10**decimals + int(fp), 10**decimals)
    else:
        decimals = 0
        value = Fraction(int(clean))
    if pct:
        value = value / 100
    return Tok("num", text + ("%" if pct else ""), value, pct, decimals)


def tokenize(text: str) -> list[Tok]:
    """Tokens of a step; ``ann`` tokens carry GSM8K ``<<a=b>>`` annotations verbatim."""
    if len(text) <= 4000:
        return list(_tokenize_cached(text))
    return _tokenize(text)


@lru_cache(maxsize=2048)
def _tokenize_cached(text: str) -> tuple[Tok, ...]:
    return tuple(_tokenize(text))


def _tokenize(text: str) -> list[Tok]:
    text = normalize_chars(text)
    out: list[Tok] = []
    for m in _TOKEN_RE.finditer(text):
        kind = m.lastgroup
        if kind in ("ws",):
            continue
        s = m.group(0)
        if kind == "number":
            out.append(_num_tok(m.group("num"), bool(m.group("pct"))))
        elif kind == "mixed":
            w, nn, dd = int(m.group("mw")), int(m.group("mn")), int(m.group("md"))
            if dd == 0 or len(s) > 40:
                out.append(Tok("brk", s))
            else:
                out.append(Tok("num", s, Fraction(w) + Fraction(nn, dd)))
        elif kind == "ordinal":
            out.append(Tok("word", s))
        elif kind == "frac12":
            out += [Tok("frac", "\\frac"), Tok("lb", "{"), _num_tok(m.group("fa"), False), Tok("rb", "}"),
                    Tok("lb", "{"), _num_tok(m.group("fb"), False), Tok("rb", "}")]
        elif kind == "cmd":
            k = _CMD_KIND.get(s)
            if k is None:
                out.append(Tok("cmd", s))
            elif k.startswith("op"):
                out.append(Tok("op", k[2:]))
            elif k == "eqa":
                out.append(Tok("eq", s, approx=True))
            else:
                out.append(Tok(k, s))
        elif kind == "pow":
            out.append(Tok("op", "^"))
        elif kind == "op":
            out.append(Tok("op", s))
        elif kind == "eq":
            out.append(Tok("eq", s, approx=s == "≈"))
        elif kind == "text":
            out.append(Tok("word", s))
        elif kind == "word":
            out.append(Tok("word", s))
        elif kind in ("lp", "rp", "lb", "rb", "fact", "ann"):
            out.append(Tok(kind, s))
        else:
            out.append(Tok("brk", s))
    return out


# ---------------------------------------------------------------- bounded arithmetic
def _check(v: Value) -> Value:
    if isinstance(v, Fraction):
        if v.numerator.bit_length() > MAX_RESULT_BITS or v.denominator.bit_length() > MAX_RESULT_BITS:
            raise EvalError("result too large")
        return v
    if not math.isfinite(v):
        raise EvalError("non-finite result")
    return v


def _add(a: Value, b: Value) -> Value:
    return _check(a + b)


def _mul(a: Value, b: Value) -> Value:
    return _check(a * b)


def _div(a: Value, b: Value) -> Value:
    if b == 0:
        raise EvalError("division by zero")
    return _check(a / b)


def _pow(a: Value, b: Value) -> Value:
    if isinstance(b, Fraction) and b.denominator == 1:
        e = b.numerator
        if abs(e) > MAX_EXPONENT:
            raise EvalError("exponent too large")
        if isinstance(a, Fraction):
            size = max(a.numerator.bit_length(), a.denominator.bit_length())
            if size * abs(e) > MAX_RESULT_BITS:
                raise EvalError("power too large")
            if a == 0 and e < 0:
                raise EvalError("division by zero")
            return _check(a**e)
        try:
            return _check(float(a) ** e)
        except (OverflowError, ZeroDivisionError) as exc:
            raise EvalError("power overflow") from exc
    fb = float(b)
    if abs(fb) > MAX_EXPONENT:
        raise EvalError("exponent too large")
    fa = float(a)
    if fa < 0:
        raise EvalError("fractional power of a negative number")
    if fa == 0 and fb < 0:
        raise EvalError("division by zero")
    try:
        r = fa**fb
    except OverflowError as exc:
        raise EvalError("power overflow") from exc
    return _exactify(_check(r))


def _exactify(x: float) -> Value:
    """Snap a float that is numerically an integer (e.g. a perfect root) to an exact Fraction."""
    r = round(x)
    if abs(x - r) <= 1e-12 * max(1.0, abs(x)) and abs(r) < 2**53:
        return Fraction(r)
    return x


def _sqrt(a: Value, index: Value = Fraction(2)) -> Value:
    if isinstance(index, Fraction) and index == 2 and isinstance(a, Fraction) and a >= 0:
        n, d = math.isqrt(a.numerator), math.isqrt(a.denominator)
        if n * n == a.numerator and d * d == a.denominator:
            return Fraction(n, d)
    if a < 0:
        raise EvalError("root of a negative number")
    if index == 0:
        raise EvalError("zeroth root")
    return _pow(a, Fraction(1) / index if isinstance(index, Fraction) else 1 / index)


def _fact(a: Value) -> Value:
    if not (isinstance(a, Fraction) and a.denominator == 1 and 0 <= a <= MAX_FACTORIAL):
        raise EvalError("factorial of a non-integer or too large number")
    return Fraction(math.factorial(int(a)))


def _binom(n: Value, k: Value) -> Value:
    if not all(isinstance(v, Fraction) and v.denominator == 1 and 0 <= v <= 1000 for v in (n, k)):
        raise EvalError("binomial of a non-integer or too large number")
    return Fraction(math.comb(int(n), int(k)))


# ---------------------------------------------------------------- parser
class _Parser:
    """Recursive descent over tokens; ``pct_plain`` reads ``20%`` as 20 instead of 1/5."""

    def __init__(self, toks: list[Tok], pct_plain: bool = False):
        self.t = toks
        self.i = 0
        self.depth = 0
        self.pct_plain = pct_plain

    def peek(self) -> Tok | None:
        return self.t[self.i] if self.i < len(self.t) else None

    def take(self) -> Tok:
        tok = self.t[self.i]
        self.i += 1
        return tok

    def expect(self, kind: str) -> None:
        tok = self.peek()
        if tok is None or tok.kind != kind:
            raise EvalError(f"expected {kind}")
        self.i += 1

    def parse(self) -> Value:
        if not self.t:
            raise EvalError("empty expression")
        v = self.expr()
        if self.i != len(self.t):
            raise EvalError(f"unexpected {self.t[self.i].text!r}")
        return v

    def _enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise EvalError("expression nested too deeply")

    def expr(self) -> Value:
        self._enter()
        v = self.term()
        while (tok := self.peek()) is not None and tok.kind == "op" and tok.text in "+-":
            self.i += 1
            r = self.term()
            v = _add(v, r if tok.text == "+" else -r)
        self.depth -= 1
        return v

    def term(self) -> Value:
        v = self.unary()
        while (tok := self.peek()) is not None:
            if tok.kind == "op" and tok.text in "*/":
                self.i += 1
                r = self.unary()
                v = _mul(v, r) if tok.text == "*" else _div(v, r)
            elif tok.kind in ("lp", "frac", "sqrt", "binom", "var", "cmd") or (
                tok.kind == "lb" and self.i > 0 and self.t[self.i - 1].kind == "rb"
            ):
                v = _mul(v, self.unary())  # implicit product: 2(3+4), 2\sqrt{3}
            else:
                break
        return v

    def unary(self) -> Value:
        tok = self.peek()
        if tok is not None and tok.kind == "op" and tok.text in "+-":
            self.i += 1
            self._enter()
            v = self.unary()
            self.depth -= 1
            return -v if tok.text == "-" else v
        return self.power()

    def power(self) -> Value:
        base = self.postfix()
        tok = self.peek()
        if tok is not None and tok.kind == "op" and tok.text == "^":
            self.i += 1
            self._enter()
            exp = self.unary()
            self.depth -= 1
            return _pow(base, exp)
        return base

    def postfix(self) -> Value:
        v = self.atom()
        while (tok := self.peek()) is not None and tok.kind == "fact":
            self.i += 1
            v = _fact(v)
        return v

    def group(self) -> Value:
        tok = self.peek()
        if tok is None:
            raise EvalError("missing argument")
        if tok.kind == "lb":
            self.i += 1
            self._enter()
            v = self.expr()
            self.depth -= 1
            self.expect("rb")
            return v
        if tok.kind == "num" and "." not in tok.text and len(tok.text) == 1:
            self.i += 1
            return tok.value
        raise EvalError("missing braces")

    def atom(self) -> Value:
        tok = self.peek()
        if tok is None:
            raise EvalError("unexpected end")
        self.i += 1
        if tok.kind == "num":
            if tok.pct and self.pct_plain:
                return tok.value * 100
            return tok.value
        if tok.kind in ("lp", "lb"):
            self._enter()
            v = self.expr()
            self.depth -= 1
            self.expect("rp" if tok.kind == "lp" else "rb")
            return v
        if tok.kind == "frac":
            a = self.group()
            b = self.group()
            return _div(a, b)
        if tok.kind == "binom":
            return _binom(self.group(), self.group())
        if tok.kind == "sqrt":
            index: Value = Fraction(2)
            nxt = self.peek()
            if nxt is not None and nxt.kind == "lp" and nxt.text == "[":
                self.i += 1
                index = self.expr()
                if (close := self.peek()) is None or close.text != "]":
                    raise EvalError("expected ]")
                self.i += 1
            return _sqrt(self.group(), index)
        if tok.kind in ("var", "cmd"):
            raise NotNumeric(f"symbol {tok.text!r}")
        raise EvalError(f"unexpected {tok.text!r}")


def evaluate_tokens(toks: list[Tok], pct_plain: bool = False) -> Value:
    return _Parser(toks, pct_plain).parse()


def evaluate(text: str) -> Value:
    """Evaluate a plain or LaTeX arithmetic expression exactly; raises :class:`EvalError`."""
    toks = [t if t.kind != "word" or len(t.text) != 1 else Tok("var", t.text) for t in tokenize(text)]
    if any(t.kind in ("brk", "eq", "ann") for t in toks):
        raise EvalError("not a single expression")
    return evaluate_tokens(toks)


# ---------------------------------------------------------------- calculations in a step
@dataclass
class Calculation:
    """One checked equality chain, e.g. ``16 - 3 - 4 = 9`` (sides ``['16 - 3 - 4', '9']``)."""

    text: str
    sides: list[str]
    values: list[Value | None]
    ok: bool | None  # None: nothing numeric to compare
    result: Value | None  # the value the chain derives (its last numeric side)
    operands: list[Fraction] = field(default_factory=list)  # literals used on the left-hand sides
    error: str = ""
    annotation: bool = False
    alt: Value | None = None  # the result read without its percent sign ("= 75%" -> 75)


_MODIFIERS = {"half", "twice", "thrice", "double", "triple", "quarter", "third", "thirds", "fourth",
              "fifth", "of", "by", "per", "than", "each", "every", "quadruple", "tenth", "dozen"}
_MATH_KINDS = {"num", "op", "lp", "rp", "lb", "rb", "frac", "sqrt", "binom", "fact", "eq", "var", "cmd"}


def _with_vars(toks: list[Tok]) -> list[Tok]:
    """Single letters become variables, except ``x`` between two operands (``0.2 x 50``)."""
    out: list[Tok] = []
    for j, t in enumerate(toks):
        if t.kind == "word":
            low = t.text.lower()
            prev = toks[j - 1] if j else None
            nxt = toks[j + 1] if j + 1 < len(toks) else None
            between = (prev is not None and prev.kind in ("num", "rp") and nxt is not None
                       and nxt.kind in ("num", "lp"))
            if low in _WORD_OPS and between:
                out.append(Tok("op", _WORD_OPS[low]))
                continue
            if low == "of" and prev is not None and prev.kind == "num" and prev.pct and nxt is not None \
                    and nxt.kind in ("num", "lp"):
                out.append(Tok("op", "*"))
                continue
            if len(t.text) == 1 and t.text.isalpha():
                out.append(Tok("var", t.text))
                continue
        out.append(t)
    return out


def _runs(toks: list[Tok]) -> list[tuple[list[Tok], str | None]]:
    """Maximal stretches of math tokens; unit words between an operand and an operator are skipped.

    Returns each run with the word directly before it (to spot ``half of 50 = 25``).
    """
    runs: list[tuple[list[Tok], str | None]] = []
    cur: list[Tok] = []
    before: str | None = None
    last_word: str | None = None
    j = 0
    n = len(toks)
    while j < n:
        t = toks[j]
        if t.kind in _MATH_KINDS:
            if not cur:
                before = last_word
            cur.append(t)
            j += 1
            continue
        if t.kind == "word" and cur and cur[-1].kind in ("num", "rp", "rb"):
            k = j
            while k < n and k - j < UNIT_BRIDGE_MAX and toks[k].kind == "word":
                k += 1
            has_op = any(x.kind == "op" for x in cur)
            if k < n and k > j and (toks[k].kind == "op" or (toks[k].kind == "eq" and has_op)):
                j = k  # "48 clips + 24 clips = 72" -> bridge the unit words
                continue
        if cur:
            runs.append((cur, before))
            cur = []
        last_word = t.text.lower() if t.kind == "word" else None
        j += 1
    if cur:
        runs.append((cur, before))
    return runs


def _split_eq(run: list[Tok]) -> tuple[list[list[Tok]], bool]:
    sides: list[list[Tok]] = [[]]
    approx = False
    for t in run:
        if t.kind == "eq":
            approx = approx or t.approx
            sides.append([])
        else:
            sides[-1].append(t)
    return sides, approx


def _try(toks: list[Tok], pct_plain: bool = False) -> Value | None | EvalError:
    try:
        return evaluate_tokens(toks, pct_plain)
    except NotNumeric:
        return None
    except (EvalError, ZeroDivisionError, OverflowError, ValueError) as exc:
        return exc if isinstance(exc, EvalError) else EvalError(str(exc))


def _trim(side: list[Tok], left: bool) -> list[Tok]:
    """Longest suffix (left side) or prefix (right side) that parses: ``Step 1. 3+4`` -> ``3+4``."""
    if not isinstance(_try(side), EvalError):
        return side
    n = len(side)
    rng = range(1, n) if left else range(n - 1, 0, -1)
    for k in rng:
        part = side[k:] if left else side[:k]
        if left:  # the dropped prefix must end where an operand could end: "a 5 + 3", "(3 + 4"
            cut_ok = (side[k - 1].kind in ("num", "var", "rp", "rb", "fact") and part[0].kind == "num") or (
                k == 1 and side[0].kind in ("lp", "lb"))
        else:  # the dropped suffix must start a new operand: "7 2", "7)"
            cut_ok = side[k].kind == "num" or (k == n - 1 and side[k].kind in ("rp", "rb"))
        if not cut_ok:
            continue
        if not isinstance(_try(part), EvalError):
            return part
    return []


def _text(toks: list[Tok]) -> str:
    out = ""
    for t in toks:
        out += (" " if out and (t.kind == "op" or out[-1] in "+-*/^") and t.text not in "^" else "") + t.text
    return out.replace(" ^ ", "^")


def _decimals(toks: list[Tok]) -> int:
    return max((t.decimals for t in toks if t.kind == "num"), default=0)


def values_match(lhs: Value, rhs: Value, shown_decimals: int = 0, lhs_decimals: int = 0,
                 approx: bool = False) -> bool:
    """Equality up to the rounding that the text shows (``10/3 = 3.33``, ``≈``)."""
    if isinstance(lhs, Fraction) and isinstance(rhs, Fraction) and lhs == rhs:
        return True
    a, b = float(lhs), float(rhs)
    tol = 1e-9 * max(1.0, abs(a), abs(b))
    if shown_decimals:
        tol = max(tol, 10.0**-shown_decimals * 1.0001)
    if lhs_decimals >= 2:
        tol = max(tol, 0.005 * max(abs(a), abs(b)))
    if approx:
        tol = max(tol, 0.01 * max(abs(a), abs(b)), 0.5 * 10.0**-shown_decimals if shown_decimals else 0.5)
    return abs(a - b) <= tol


def _eval_side(side: list[Tok]) -> tuple[list[Value], bool]:
    """Values of a side (two readings when it holds a percent) and whether it failed to parse."""
    vals = []
    v = _try(side)
    if isinstance(v, EvalError):
        return [], True
    if v is not None:
        vals.append(v)
        if any(t.pct for t in side):
            w = _try(side, True)
            if w is not None and not isinstance(w, EvalError):
                vals.append(w)
    return vals, False


def _side_values(side: list[Tok]) -> list[Value]:
    return _eval_side(side)[0]


def check_chain(sides: list[list[Tok]], approx: bool = False,
                vals: list[list[Value]] | None = None) -> tuple[bool | None, str, int]:
    """Compare adjacent numeric sides; returns (ok, reason, index of the first bad side pair)."""
    if vals is None:
        vals = [_side_values(s) for s in sides]
    compared = False
    for i in range(len(sides) - 1):
        a, b = vals[i], vals[i + 1]
        if not a or not b:
            continue
        compared = True
        rhs_dec = _decimals(sides[i + 1])
        lhs_dec = _decimals(sides[i])
        if any(values_match(x, y, rhs_dec, lhs_dec, approx) or values_match(y, x, lhs_dec, rhs_dec, approx)
               for x in a for y in b):
            continue
        nxt = sides[i + 1]
        if len(nxt) > 1 and nxt[0].kind == "num" and any(values_match(x, nxt[0].value) for x in a):
            continue  # running total "3 + 4 = 7 + 2 = 9": sloppy, not a wrong result
        return False, f"{_text(sides[i])} = {_text(sides[i + 1])} is wrong (lhs = {_fmt(a[0])})", i
    return (True if compared else None), "", -1


def _fmt(v: Value) -> str:
    if isinstance(v, Fraction):
        if v.denominator == 1:
            return str(v.numerator)
        f = float(v)
        return f"{v.numerator}/{v.denominator}" if abs(f) < 1e-4 or len(str(v)) < 8 else f"{f:.6g}"
    return f"{v:.6g}"


def _operands(toks: list[Tok]) -> list[Fraction]:
    return [t.value for t in toks if t.kind == "num"]


def _make_calc(sides: list[list[Tok]], approx: bool, annotation: bool,
               vals: list[list[Value]] | None = None) -> Calculation | None:
    if len(sides) < 2:
        return None
    if vals is None:
        vals = [_side_values(s) for s in sides]
    ok, reason, _ = check_chain(sides, approx, vals)
    values: list[Value | None] = [vs[0] if vs else None for vs in vals]
    result = next((v for v in reversed(values) if v is not None), None)
    last = max((i for i, v in enumerate(values) if v is not None), default=-1)
    first = min((i for i, v in enumerate(values) if v is not None), default=-1)
    ops = _operands(sides[first]) if 0 <= first < last else []
    if len(sides[first]) == 1 if first >= 0 else False:
        ops = []  # "x = 55 = 55", "<<55=55>>": a restatement, not a use
    alt = vals[last][-1] if last >= 0 and len(vals[last]) > 1 else None
    return Calculation(
        text=" = ".join(_text(s) for s in sides).replace(" = ", "=") if annotation
        else " = ".join(_text(s) for s in sides),
        sides=[_text(s) for s in sides], values=values, ok=ok, result=result, operands=ops,
        error=reason, annotation=annotation, alt=alt,
    )


def extract_calculations(step: str) -> list[Calculation]:
    """Every calculation in a step: GSM8K ``<<a=b>>`` annotations and ``a op b = c`` chains."""
    calcs: list[Calculation] = []
    toks = tokenize(step)
    for t in toks:
        if t.kind == "ann":
            inner = _with_vars([x for x in tokenize(t.text[2:-2]) if x.kind != "brk"])
            sides, approx = _split_eq(inner)
            sides = [s for s in sides if s]
            c = _make_calc(sides, approx, annotation=True)
            if c is not None and c.ok is not None:
                calcs.append(c)
    toks = _with_vars([t for t in toks if t.kind != "ann"])
    for run, before in _runs(toks):
        if len(run) > MAX_RUN_TOKENS:
            run = run[-MAX_RUN_TOKENS:]
            before = None
        if not any(t.kind == "eq" for t in run):
            continue
        sides, approx = _split_eq(run)
        if before in _MODIFIERS and sides:
            sides[0] = []  # "half of 50 = 25": the left operand is not the whole expression
        if sides and sides[0]:
            sides[0] = _trim(sides[0], left=True)
        if sides and sides[-1]:
            sides[-1] = _trim(sides[-1], left=False)
        # split at sides that do not parse (a new chain starts after them)
        chain: list[list[Tok]] = []
        chain_vals: list[list[Value]] = []
        for s in sides + [[]]:
            if s:
                vs, failed = _eval_side(s)
                if not failed:
                    chain.append(s)
                    chain_vals.append(vs)
                    continue
            if len(chain) >= 2:
                c = _make_calc(chain, approx, annotation=False, vals=chain_vals)
                if c is not None and c.ok is not None:
                    calcs.append(c)
            chain, chain_vals = [], []
    return calcs


def numbers_in(text: str, annotations: bool = True) -> list[Fraction]:
    """Every numeric literal in a text (``$1,200`` -> 1200, ``20%`` -> 1/5 and 20); with
    ``annotations=False`` the contents of GSM8K ``<<...>>`` annotations are skipped."""
    out: list[Fraction] = []
    for t in tokenize(text):
        if t.kind == "num":
            out.append(t.value)
            if t.pct:
                out.append(t.value * 100)
        elif t.kind == "ann" and annotations:
            out += numbers_in(t.text[2:-2])
    return out
