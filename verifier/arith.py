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

import decimal
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
            "\u00a0": " ", "\u2009": " ", "\u202f": " ",
            "¢": " ", "€": " ", "£": " ", "¥": " ", "₹": " "}  # currency signs, as "$" in prose
_NON_ASCII_RE = re.compile(r"[^\x00-\x7f]")


def _map_char(m: re.Match) -> str:
    ch = m.group(0)
    if ch in _SYMBOLS:
        return _SYMBOLS[ch]
    if unicodedata.category(ch) == "Nd":
        return str(unicodedata.digit(ch))
    return ch


_ROOT_RE = re.compile(r"√\s*(\d+(?:\.\d+)?)")
_VULGAR = {ch: "".join(chr(int(c, 16)) for c in unicodedata.decomposition(ch).split()[1:]).replace("\u2044", "/")
           for ch in "¼½¾⅐⅑⅒⅓⅔⅕⅖⅗⅘⅙⅚⅛⅜⅝⅞"}  # ½ -> 1/2: the <fraction> decomposition, its slash made ASCII
_VULGAR_RE = re.compile(r"(\d+ ?)?([" + "".join(_VULGAR) + r"])")
_SUPER = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻", "0123456789+-")
_SUPER_RE = re.compile(r"[⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻]+")
_SUB = str.maketrans("₀₁₂₃₄₅₆₇₈₉", "0123456789")
_SUB_RE = re.compile(r"[₀₁₂₃₄₅₆₇₈₉]+")


def _vulgar(m: re.Match) -> str:
    """``1½`` and ``1 ½`` -> ``1 1/2`` (a mixed number, as written in ASCII); ``½`` alone -> ``(1/2)``, so that
    ``10 ÷ ½`` stays 20."""
    whole, frac = m.group(1), _VULGAR[m.group(2)]
    return f"{whole.strip()} {frac}" if whole else f"({frac})"


def normalize_chars(text: str) -> str:
    """Map unicode decimal digits to ASCII, typographic operators to ASCII ones, ``√25`` to ``\\sqrt{25}``,
    vulgar fractions (``½``, ``1¾``) to ASCII fractions and mixed numbers, superscripts (``5²``, ``10⁻³``) to
    powers and subscript digits (``x₁``) to subscripts."""
    if text.isascii():
        return text
    if "√" in text:
        text = _ROOT_RE.sub(r"\\sqrt{\1}", text).replace("√", "\\sqrt ")
    text = _VULGAR_RE.sub(_vulgar, text)
    text = _SUPER_RE.sub(lambda m: "^{" + m.group(0).translate(_SUPER) + "}", text)
    text = _SUB_RE.sub(lambda m: "_{" + m.group(0).translate(_SUB) + "}", text)
    text = text.replace("\u2044", "/")  # the fraction slash: 3⁄4
    return _NON_ASCII_RE.sub(_map_char, text)


# ---------------------------------------------------------------- tokenizer
class Tok(NamedTuple):
    kind: str  # num op lp rp lb rb eq frac sqrt binom fact var word cmd brk ann
    text: str
    value: Fraction | None = None
    pct: bool = False
    decimals: int = 0
    approx: bool = False


_NUM = r"(?:\d{1,3}(?:(?:,|\{,\}|,\\!| |\\,)\d{3}(?!\d))+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"  # 1,000 1 000 1\,000
ANNOTATION = r"<<[^<>]{0,400}>>"  # a GSM8K calculator mark
_TOKEN_RE = re.compile(
    r"(?P<ws>\s+|\\[,;:! ]|~|&|\\quad|\\qquad|\\(?:left|right|[bB]igg?[lr]?|displaystyle|boxed)(?![A-Za-z])|\\\$|\$)"
    # words are most tokens, so they are tried second; a letter before "_" starts a subscript (below)
    r"|(?P<word>(?![A-Za-z]_)[A-Za-z]+(?:/[A-Za-z]+)*)"
    rf"|(?P<ann>{ANNOTATION})"
    r"|(?P<sub>(?:[A-Za-z]|\\[A-Za-z]+)_(?:\{[^{}]{0,40}\}|[A-Za-z0-9]))"
    r"|(?P<base>\d+_(?:\{\d{1,3}\}|\d))"
    r"|(?P<frac12>\\[dt]?frac\s*(?P<fa>\d)\s*(?P<fb>\d))"
    r"|(?P<ordinal>\d+(?:st|nd|rd|th)\b)"
    r"|(?P<mixed>(?<![\d.,/*^])(?P<mw>\d+) (?P<mn>\d+)/(?P<md>\d+)(?![\d.]|\s*[/^(]))"
    rf"|(?P<number>(?P<num>{_NUM})(?P<pct>\s*\\?%)?)"
    r"|(?P<text>\\(?:text|mathrm|textbf|textrm|textsf|texttt|mbox|operatorname|mathbf|mathit|textit)\s*"
    r"\{[^{}]{0,80}\})"
    r"|(?P<cmd>\\[A-Za-z]+)"
    r"|(?P<pow>\*\*)"
    r"|(?P<op>[-+*/^])"
    r"|(?P<eq>=|≈)"
    r"|(?P<lp>[(\[])|(?P<rp>[)\]])|(?P<lb>\{)|(?P<rb>\})"
    r"|(?P<fact>!)"
    r"|(?P<ratio>(?<=\d):(?=\d))"  # 2:5, 3:15: a ratio or a time, never a break between two calculations
    r"|(?P<other>.)",
    re.DOTALL,
)
_CMD_KIND = {
    "\\frac": "frac", "\\dfrac": "frac", "\\tfrac": "frac", "\\cfrac": "frac",
    "\\sqrt": "sqrt", "\\binom": "binom", "\\dbinom": "binom", "\\tbinom": "binom",
    "\\cdot": "op*", "\\times": "op*", "\\ast": "op*", "\\div": "op/",
    "\\approx": "eqa", "\\simeq": "eqa",
}
# commands that name functions (everything else after a backslash that is not an operator is a symbol)
FUNCTIONS = frozenset("\\" + f for f in (
    "sin cos tan cot sec csc arcsin arccos arctan sinh cosh tanh log ln lg exp lim max min gcd lcm det deg "
    "sum prod int mod bmod pmod operatorname floor ceil lfloor rfloor lceil rceil arg dim ker Pr").split())
_WORD_OPS = {"times": "*", "plus": "+", "minus": "-", "x": "*", "X": "*"}
UNIT_BRIDGE_MAX = 3


@lru_cache(maxsize=8192)
def _num_tok(text: str, pct: bool) -> Tok:  # a Tok is immutable: literals repeat across steps and solutions
    clean = text.replace("{,}", "").replace("\\!", "").replace("\\,", "").replace(",", "").replace(" ", "")
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


# token kinds whose Tok is (kind, matched text): looked up before the chain below (words are most tokens)
_SIMPLE_KIND = {"word": "word", "text": "word", "ordinal": "word", "op": "op", "lp": "lp",
                "rp": "rp", "lb": "lb", "rb": "rb", "fact": "fact", "ann": "ann",
                "base": "cmd", "ratio": "cmd"}  # base: 1011_2, a numeral in another base


# (kind, text) -> its Tok, shared: a Tok is immutable, and words and operators repeat across steps and solutions
_SIMPLE_TOKS: dict[tuple[str, str], Tok] = {}
MAX_SIMPLE_TOKS = 50_000


def _tokenize(text: str) -> list[Tok]:
    text = normalize_chars(text)
    out: list[Tok] = []
    simple_kind = _SIMPLE_KIND.get
    simple_tok = _SIMPLE_TOKS.get
    for m in _TOKEN_RE.finditer(text):
        kind = m.lastgroup
        if kind == "ws":
            continue
        s = m.group(0)
        simple = simple_kind(kind)
        if simple is not None:
            tok = simple_tok((simple, s))
            if tok is None:
                tok = Tok(simple, s)
                if len(s) <= 24 and len(_SIMPLE_TOKS) < MAX_SIMPLE_TOKS:  # not annotations or long text groups
                    _SIMPLE_TOKS[simple, s] = tok
            out.append(tok)
        elif kind == "number":
            out.append(_num_tok(m.group("num"), bool(m.group("pct"))))
        elif kind == "mixed":
            w, nn, dd = int(m.group("mw")), int(m.group("mn")), int(m.group("md"))
            if dd == 0 or len(s) > 40:
                out.append(Tok("brk", s))
            else:
                out.append(Tok("num", s, Fraction(w) + Fraction(nn, dd)))
        elif kind == "sub":  # x_1, a_{n+1}, \alpha_2: a symbol (\log_2: a function), never a number
            out.append(Tok("var" if not s.startswith("\\") or s.split("_")[0] not in FUNCTIONS else "cmd", s))
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
        elif kind == "eq":
            out.append(Tok("eq", s, approx=s == "≈"))
        else:
            out.append(Tok("brk", s))
    return out


# ---------------------------------------------------------------- bounded arithmetic
def to_float(v: Value) -> float:
    """``float(v)``, or an infinity of its sign for an exact value beyond the float range (exact results reach
    :data:`MAX_RESULT_BITS` bits, floats about 1,024)."""
    try:
        return float(v)
    except OverflowError:
        return math.inf if v > 0 else -math.inf


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
    fb = to_float(b)
    if abs(fb) > MAX_EXPONENT:
        raise EvalError("exponent too large")
    fa = to_float(a)
    if math.isinf(fa):
        raise EvalError("power overflow")
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

    def __init__(self, toks: list[Tok], pct_plain: bool = False, mixed: bool = False):
        self.t = toks
        self.i = 0
        self.depth = 0
        self.pct_plain = pct_plain
        self.mixed = mixed  # read "3\frac{1}{4}" as the mixed number 3 1/4 instead of a product

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
                mixed = self.mixed and tok.kind == "frac" and self.t[self.i - 1].kind == "num"
                r = self.unary()
                if mixed and isinstance(r, Fraction) and 0 < r < 1:
                    v = _add(v, r)  # 1785\frac{1}{16}: a mixed number
                else:
                    v = _mul(v, r)  # implicit product: 2(3+4), 2\sqrt{3}
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


def evaluate_tokens(toks: list[Tok], pct_plain: bool = False, mixed: bool = False) -> Value:
    flat = _flat_value(toks, pct_plain)
    return _Parser(toks, pct_plain, mixed).parse() if flat is None else flat


def _flat_value(toks: list[Tok], pct_plain: bool) -> Value | None:
    """A lone literal or ``a op b op c ...`` with literals and ``+ - * /`` only (most sides of GSM8K
    calculations): the parser's value, with the same operations in the same order, without its recursion;
    None for any other shape."""
    n = len(toks)
    if not n % 2:
        return None
    for k in range(n):
        t = toks[k]
        if t.kind != ("op" if k % 2 else "num") or (k % 2 and t.text not in _FLAT_OPS):
            return None
    vals = [t.value * 100 if t.pct and pct_plain else t.value for t in toks[::2]]
    total: Value | None = None
    sign, cur = "+", vals[0]
    for k in range(1, len(vals)):
        op = toks[2 * k - 1].text
        if op == "*":
            cur = _mul(cur, vals[k])
        elif op == "/":
            cur = _div(cur, vals[k])
        else:  # a term ends: added to the sum as the parser's expr() does, then the next term starts
            total = cur if total is None else _add(total, cur if sign == "+" else -cur)
            sign, cur = op, vals[k]
    return cur if total is None else _add(total, cur if sign == "+" else -cur)


_FLAT_OPS = frozenset("+-*/")


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
    algebraic: bool = False  # an equality with variables checked by :mod:`verifier.symbolic`


_MODIFIERS = {"half", "twice", "thrice", "double", "triple", "quarter", "third", "thirds", "fourth",
              "fifth", "of", "by", "per", "than", "each", "every", "quadruple", "tenth", "dozen"}
_MATH_KINDS = {"num", "op", "lp", "rp", "lb", "rb", "frac", "sqrt", "binom", "fact", "eq", "var", "cmd"}


def _with_vars(toks: list[Tok], latex: bool = False) -> list[Tok]:
    """Single letters become variables, except ``x`` between two operands (``0.2 x 50``; not in LaTeX math,
    where ``3 x`` is a product). In LaTeX math a short word such as ``xy`` is a product of variables."""
    out: list[Tok] = []
    for j, t in enumerate(toks):
        if t.kind != "word":
            out.append(t)
            continue
        if latex and t.text.isalpha() and len(t.text) <= 3 and not t.text.startswith("\\"):
            if t.text.islower():
                out += [Tok("var", ch) for ch in t.text]
            else:
                out.append(Tok("var", t.text))  # AB, ABC: a segment or a triangle, one symbol
            continue
        low = t.text.lower()
        if len(low) > 1 and low not in _WORD_SPECIAL:  # an ordinary word: none of the readings below applies
            out.append(t)
            continue
        prev = toks[j - 1] if j else None
        nxt = toks[j + 1] if j + 1 < len(toks) else None
        between = (prev is not None and prev.kind in ("num", "rp") and nxt is not None
                   and nxt.kind in ("num", "lp"))
        if low in _WORD_OPS and between:
            out.append(Tok("op", _WORD_OPS[low]))
            continue
        after = toks[j + 2] if j + 2 < len(toks) else None
        if not latex and low in _WORD_EQ and nxt is not None and nxt.kind == "num" and _computed_before(out) \
                and not (after is not None and after.kind in ("op", "lp", "eq")):
            out.append(Tok("eq", t.text))  # "20 minus 8 is 12", "12 + 5 equals 17": a number after it
            continue
        if low == "of" and prev is not None and (prev.kind == "num" and prev.pct or _fraction_last(out)) \
                and nxt is not None and nxt.kind in ("num", "lp"):
            out.append(Tok("op", "*"))  # "20% of 50", "3/4 of 20", "(1/2) of 10": a product
            continue
        if len(t.text) == 1 and t.text.isalpha() and not (
                prev is not None and prev.kind in ("other", "brk") and prev.text in "'’"):  # that's: no variable
            out.append(Tok("var", t.text))
            continue
        out.append(t)
    return out


_WORD_EQ = frozenset(("is", "equals", "makes", "gives", "yields"))
_WORD_SPECIAL = _WORD_EQ | {w.lower() for w in _WORD_OPS} | {"of"}  # the words _with_vars may read as math


def _fraction_last(out: list[Tok]) -> bool:
    """Whether the tokens so far end in a fraction of two literals, ``3/4`` or ``(1/2)``, that starts them or
    follows a word, a space-free break or an opening bracket (so ``12 + 3/4 of 20`` is not read)."""
    if [t.kind for t in out[-5:]] == ["lp", "num", "op", "num", "rp"] and out[-3].text == "/":
        n = 5
    elif [t.kind for t in out[-3:]] == ["num", "op", "num"] and out[-2].text == "/":
        n = 3
    else:
        return False
    return len(out) == n or out[-n - 1].kind not in ("num", "op", "rp", "eq")  # tokenize keeps no whitespace


def _computed_before(out: list[Tok]) -> bool:
    """Whether the tokens just before (back to the last word or break) are a calculation: a number last and
    an operator between numbers, so "3 + 4 is 7" is an equality and "the answer is 7" is not."""
    if not out or out[-1].kind not in ("num", "rp"):
        return False
    ops = nums = 0
    for t in reversed(out):
        if t.kind not in _MATH_KINDS or t.kind == "eq":
            break
        ops += t.kind == "op"
        nums += t.kind == "num"
    return ops >= 1 and nums >= 2


def _lead(toks: list[Tok], j: int, words: int = 6) -> str:
    """What leads into a run that starts at ``toks[j]``: ``"start"`` (the text's or a sentence's start),
    ``"number"`` (a number or an operator ends within ``words`` words before, only words between) or ``""``."""
    if j == 0 or (toks[j - 1].kind == "brk" and toks[j - 1].text in ".:!?;\n"):
        return "start"
    k, n_words = j - 1, 0
    while k >= 0 and n_words < words and (toks[k].kind == "word" or toks[k].text in ("'", "\u2019")):
        n_words += toks[k].kind == "word"  # "Andrew's": a word, not a break
        k -= 1
    return "number" if 0 <= k < j - 1 and toks[k].kind in ("num", "rp", "op") else ""


def _runs(toks: list[Tok]) -> list[tuple[list[Tok], str | None, str]]:
    """Maximal stretches of math tokens; unit words between an operand and an operator are skipped.

    Returns each run with the word directly before it (to spot ``half of 50 = 25``) and what leads into
    it (:func:`_lead`: ``10 cows on the boat - 6 = 4``).
    """
    runs: list[tuple[list[Tok], str | None, str]] = []
    cur: list[Tok] = []
    before: str | None = None
    lead = ""
    last_word: str | None = None
    prev_word: str | None = None
    j = 0
    n = len(toks)
    while j < n:
        t = toks[j]
        if t.kind in _MATH_KINDS:
            if not cur:  # "of" with the word before it: "half of 50" is not "a total of 3+4"
                before = f"{prev_word} {last_word}" if last_word in ("of", "by") and prev_word else last_word
                lead = _lead(toks, j)
            cur.append(t)
            j += 1
            continue
        if t.kind == "word" and cur and cur[-1].kind in ("num", "rp", "rb"):
            k = j
            while k < n and k - j < UNIT_BRIDGE_MAX and toks[k].kind == "word":
                k += 1
            side = cur[max((i for i, x in enumerate(cur) if x.kind == "eq"), default=-1) + 1:]
            has_op = any(x.kind == "op" for x in side)  # "4-2=2 hours=120 minutes": a conversion, no bridge
            if k < n and k > j and (toks[k].kind == "op" or (toks[k].kind == "eq" and has_op)):
                j = k  # "48 clips + 24 clips = 72" -> bridge the unit words
                continue
        if cur:
            runs.append((cur, before, lead))
            cur = []
        prev_word, last_word = last_word, (t.text.lower() if t.kind == "word" else None)
        j += 1
    if cur:
        runs.append((cur, before, lead))
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


def _try(toks: list[Tok], pct_plain: bool = False, mixed: bool = False) -> Value | None | EvalError:
    try:
        return evaluate_tokens(toks, pct_plain, mixed)
    except NotNumeric:
        return None
    except (EvalError, ZeroDivisionError, OverflowError, ValueError) as exc:
        return exc if isinstance(exc, EvalError) else EvalError(str(exc))


def _trim(side: list[Tok], left: bool) -> tuple[list[Tok], Value | None]:
    """Longest suffix (left side) or prefix (right side) that parses: ``Step 1. 3+4`` -> ``3+4``; with its
    value (None: not numeric, or nothing parses and the side is ``[]``)."""
    v = _try(side)
    if not isinstance(v, EvalError):
        return side, v
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
        v = _try(part)
        if not isinstance(v, EvalError):
            return part, v
    return [], None


def _text(toks: list[Tok]) -> str:
    out = ""
    for t in toks:
        out += (" " if out and (t.kind == "op" or out[-1] in "+-*/^") and t.text not in "^" else "") + t.text
    return out.replace(" ^ ", "^")


def _decimals(toks: list[Tok]) -> int:
    return max((t.decimals for t in toks if t.kind == "num"), default=0)


ROUNDING_SLACK = 1.1  # a shown result may be off by half a unit in its last place, times this slack


def values_match(lhs: Value, rhs: Value, shown_decimals: int = 0, lhs_decimals: int = 0,  # noqa: ARG001
                 approx: bool = False, lhs_error: float = 0.0, precision: float | None = None) -> bool:
    """Equality up to the rounding that the text shows.

    ``rhs`` shown with ``shown_decimals`` decimals may differ from the exact ``lhs`` by half a unit in its
    last place (``10/3 = 3.33``; times :data:`ROUNDING_SLACK`), plus ``lhs_error``, how far the lhs can move
    when its own rounded-looking literals are off by their rounding (``0.33 * 90 = 30``; see
    :func:`rounding_error`). ``12 * 12.50 = 150.60`` is wrong: 150 is far outside 150.60 ± 0.0055.
    ``approx`` (``≈``, "about", "rounded") widens this to 1% of the value, the precision the shown digits
    imply (trailing zeros of an integer count: "about 1,500" is to the nearest hundred) and ``precision``
    (stated: "to the nearest tenth" -> 0.05). ``lhs_decimals`` is accepted for compatibility, unused.
    """
    if isinstance(lhs, Fraction) and isinstance(rhs, Fraction) and lhs == rhs:
        return True
    try:
        a, b = float(lhs), float(rhs)
    except OverflowError:  # beyond the float range (3^{2002}): relative to the size, in exact arithmetic
        if not (isinstance(lhs, Fraction) and isinstance(rhs, Fraction)):
            return False  # a float is never that large
        size = max(abs(lhs), abs(rhs))
        return abs(lhs - rhs) <= size * (Fraction(1, 100) if approx else Fraction(1, 10**9))
    tol = 1e-9 * max(1.0, abs(a), abs(b))
    if shown_decimals:
        tol = max(tol, 0.5 * 10.0**-shown_decimals * ROUNDING_SLACK)
    tol += lhs_error * ROUNDING_SLACK
    if approx:
        unit = 10.0**-shown_decimals
        if not shown_decimals and b == int(b) and b:
            n = abs(int(b))
            while n % 10 == 0 and unit < 1e6:
                n //= 10
                unit *= 10
        shown_unit = 0.5 * unit * ROUNDING_SLACK if shown_decimals or b == int(b) else 0.0
        tol = max(tol, 0.01 * max(abs(a), abs(b)), shown_unit, (precision or 0.0) * ROUNDING_SLACK)
    return abs(a - b) <= tol


def _rounded_looking(t: Tok) -> bool:
    """A literal that may itself be a rounding (0.33 for 1/3, 3.14 for pi): two or more decimals, not
    ending in 0 and not a multiple of 1/4 (prices such as 12.50 and 0.25 are exact)."""
    return (t.kind == "num" and t.decimals >= 2 and not t.text.rstrip("%").endswith("0")
            and (t.value * 4).denominator != 1)


def rounding_error(side: list[Tok], value: Value) -> float:
    """How far ``side`` moves when each rounded-looking literal moves by half a unit of its last place
    (first order, at most six literals); 0 when it has none."""
    idx = [k for k, t in enumerate(side) if _rounded_looking(t)][:6]
    err = 0.0
    for k in idx:
        t = side[k]
        h = Fraction(1, 2 * 10**t.decimals) * (Fraction(1, 100) if t.pct else 1)
        moved = side[:k] + [t._replace(value=t.value + h)] + side[k + 1:]
        w = _try(moved)
        if w is None or isinstance(w, EvalError):
            continue
        d = abs(to_float(w) - to_float(value))
        if math.isfinite(d):
            err += d
    return err


_APPROX_RE = re.compile(r"\\approx|≈|\\sim\b|(?<![\\\w])~\s*\$?\d|\b(?:round(?:s|ed|ing)?|nearest|estimated?)\b|"
                        r"\b(?:approx\w*|about|around|roughly|nearly|almost|close to)[\s$\\(]{0,4}[-\d.]",
                        re.IGNORECASE)
_PRECISION_WORDS = {"tenth": 0.05, "hundredth": 0.005, "thousandth": 0.0005, "ten-thousandth": 0.00005,
                    "whole": 0.5, "integer": 0.5, "unit": 0.5, "one": 0.5, "dollar": 0.5, "cent": 0.005,
                    "percent": 0.005, "ten": 5.0, "hundred": 50.0, "thousand": 500.0}
_PRECISION_RE = re.compile(r"nearest\s+(ten-thousandth|tenth|hundredth|thousandth|whole|integer|unit|one|"
                           r"dollar|cent|percent|ten|hundred|thousand)", re.IGNORECASE)


def stated_rounding(text: str) -> tuple[bool, float | None]:
    """Whether ``text`` says its numbers are approximate ("≈", "about", "rounded"), and the precision it
    states ("to the nearest tenth" -> 0.05; a percent "to the nearest percent" is 0.005 as a fraction)."""
    if not _APPROX_RE.search(text):
        return False, None
    m = _PRECISION_RE.search(text)
    if m is None:
        return True, None
    word = m.group(1).lower()
    return True, _PRECISION_WORDS.get(word)


_UNSET = object()


def _eval_side(side: list[Tok], first=_UNSET) -> tuple[list[Value], bool]:
    """Values of a side (two readings when it holds a percent) and whether it failed to parse; ``first``: the
    side's plain reading when the caller has it already (:func:`_trim`)."""
    vals = []
    v = _try(side) if first is _UNSET else first
    if isinstance(v, EvalError):
        return [], True
    if v is not None:
        vals.append(v)
        if any(t.pct for t in side):
            w = _try(side, True)
            if w is not None and not isinstance(w, EvalError):
                vals.append(w)
        if any(a.kind == "num" and b.kind == "frac" for a, b in zip(side, side[1:], strict=False)):
            w = _try(side, mixed=True)
            if w is not None and not isinstance(w, EvalError) and w != v:
                vals.insert(0, w)  # the usual reading of 3\frac{1}{2}; the product stays a second reading
    return vals, False


def _side_values(side: list[Tok]) -> list[Value]:
    return _eval_side(side)[0]


def check_chain(sides: list[list[Tok]], approx: bool = False,
                vals: list[list[Value]] | None = None,
                precision: float | None = None) -> tuple[bool | None, str, int]:
    """Compare adjacent numeric sides; returns (ok, reason, index of the first bad side pair).

    ``approx``/``precision``: the text states a rounding (see :func:`values_match`)."""
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
        if any(values_match(x, y, rhs_dec, 0, approx, 0.0, precision)
               or values_match(y, x, lhs_dec, 0, approx, 0.0, precision) for x in a for y in b):
            continue
        # rounded-looking literals of an expression side (a lone literal's rounding is its shown decimals)
        err = sum(rounding_error(sd, v[0]) for sd, v in ((sides[i], a), (sides[i + 1], b)) if len(sd) > 1)
        if err and any(values_match(x, y, rhs_dec, 0, approx, err, precision)
                       or values_match(y, x, lhs_dec, 0, approx, err, precision) for x in a for y in b):
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
        f = to_float(v)
        if math.isinf(f):
            return fmt_huge(v)
        return f"{v.numerator}/{v.denominator}" if abs(f) < 1e-4 or len(str(v)) < 8 else f"{f:.6g}"
    return f"{v:.6g}"


def fmt_huge(v: Fraction) -> str:
    """A value beyond the float range in six significant digits (``1.23457E+955``)."""
    with decimal.localcontext() as ctx:
        ctx.prec = 8
        return format(decimal.Decimal(v.numerator) / decimal.Decimal(v.denominator), ".6g")


def _operands(toks: list[Tok]) -> list[Fraction]:
    return [t.value for t in toks if t.kind == "num"]


def _make_calc(sides: list[list[Tok]], approx: bool, annotation: bool,
               vals: list[list[Value]] | None = None, precision: float | None = None) -> Calculation | None:
    if len(sides) < 2:
        return None
    if vals is None:
        vals = [_side_values(s) for s in sides]
    ok, reason, _ = check_chain(sides, approx, vals, precision)
    values: list[Value | None] = [vs[0] if vs else None for vs in vals]
    result = next((v for v in reversed(values) if v is not None), None)
    last = max((i for i, v in enumerate(values) if v is not None), default=-1)
    first = min((i for i, v in enumerate(values) if v is not None), default=-1)
    ops = _operands(sides[first]) if 0 <= first < last else []
    if len(sides[first]) == 1 if first >= 0 else False:
        ops = []  # "x = 55 = 55", "<<55=55>>": a restatement, not a use
    alt = vals[last][-1] if last >= 0 and len(vals[last]) > 1 else None
    texts = [_text(s) for s in sides]
    return Calculation(
        text=" = ".join(texts).replace(" = ", "=") if annotation else " = ".join(texts),
        sides=texts, values=values, ok=ok, result=result, operands=ops,
        error=reason, annotation=annotation, alt=alt,
    )


# ---------------------------------------------------------------- math spans
_ENVS = r"(?:align|equation|gather|eqnarray|multline|aligned|alignat|split|gathered)\*?"
# matrices, cases and arrays inside math: one opaque symbol each (their & and \\ are not rows)
_OPAQUE_ENV_RE = re.compile(r"\\begin\s*\{([pbvVB]?matrix|smallmatrix|cases|array)\}.*?\\end\s*\{\1\}", re.DOTALL)
_DELIM_RE = re.compile(r"(?<!\\)\$\$|(?<!\\)\$|\\\(|\\\)|\\\[|\\\]|\\(begin|end)\s*\{(" + _ENVS + r")\}")
_PROSE_WORDS_RE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{3,}")
_TEXT_CMD_RE = re.compile(r"\\(?:text\w*|mbox|mathrm|operatorname)\s*\{[^{}]*\}")
_ENV_RE = re.compile(r"\\(?:begin|end)\s*\{[A-Za-z*]+\}(?:\{[^{}]*\})?")
_ROW_RE = re.compile(r"\\\\(?:\[[^\]]{0,20}\])?|\\(?:newline|cr)\b")
_CLOSER = {"$": "$", "$$": "$$", "\\(": "\\)", "\\[": "\\]"}


_FUNC_NAME_RE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{3,}(?=(?:\\left)?\()")  # cis(0), sgn\left(x\right): no prose


def _looks_like_math(inside: str) -> bool:
    body = _FUNC_NAME_RE.sub(" ", _TEXT_CMD_RE.sub(" ", inside))
    if len(_PROSE_WORDS_RE.findall(body)) >= 2:
        return False  # "$5 for apples and $": currency signs around prose
    if inside.rstrip()[-1:] in ("+", "-", "*", "/", "="):
        return False  # "$36/$3": a span cannot end in an operator, so these are currency signs
    return (bool(inside.strip()) and not inside[-1:].isspace()) or bool(re.search(r"[\\^_{]", inside))


def _rows(span: str) -> list[str]:
    rows: list[str] = []
    if "\\begin" in span:
        span = _OPAQUE_ENV_RE.sub(r" \\matrix ", span)
    for row in _ROW_RE.split(_ENV_RE.sub(" ", span)):
        r = row.strip()
        if not r:
            continue
        if rows and re.match(r"&?\s*(?:\\q?quad\s*|\\[,;:]\s*)*(?:=|\\approx|\\le|\\ge|<|>|[-+](?!\s*&))", r):
            rows[-1] = rows[-1] + " " + r  # "&= ..." (or "&- 4y^2 ...") continues the row above
        else:
            rows.append(r)
    return rows


@lru_cache(maxsize=4096)
def split_math(text: str) -> tuple[tuple[str, bool], ...]:
    """``text`` as (segment, is_math) pieces: ``$...$``, ``$$...$$``, ``\\(...\\)``, ``\\[...\\]`` and
    ``\\begin{align}``-style environments are math, the rest prose; display rows (``\\\\``) are separate
    segments and a row that starts with ``=`` (``&= ...``) continues the previous one. Currency signs
    (``$5 + $3 = $8``, where the spans they would delimit hold prose or end in a space, or an odd number
    of them) make the whole text one prose segment, as before."""
    if "$" not in text and "\\" not in text:
        return ((text, False),)
    pieces: list[tuple[str, bool]] = []
    pos = 0
    closer: str | None = None
    opened_at = 0
    for m in _DELIM_RE.finditer(text):
        d = m.group(0)
        env = m.group(2)
        if closer is None:
            if m.group(1) == "end" or d in ("\\)", "\\]"):
                continue
            pieces.append((text[pos:m.start()], False))
            closer = f"\\end{{{env}}}" if env else _CLOSER[d]
            pos = opened_at = m.end()
        elif (env and m.group(1) == "end" and closer == f"\\end{{{env}}}") or (not env and d == closer):
            inside = text[opened_at:m.start()]
            if d == "$" and (not _looks_like_math(inside) or text[m.end():m.end() + 1].isdigit()):
                return ((text, False),)  # "$5 and $3", "$12-$4": currency signs ($ right before a digit)
            pieces.append((inside, True))
            closer = None
            pos = m.end()
    if closer == "$":
        return ((text, False),)  # an odd number of dollar signs: currency
    if closer is not None:
        pieces.append((text[opened_at:], True))
    else:
        pieces.append((text[pos:], False))
    out: list[tuple[str, bool]] = []
    for p, is_math in pieces:
        if not p.strip():
            continue
        if is_math:
            out += [(r, True) for r in _rows(p)]
        else:
            out.append((p, False))
    return tuple(out) or ((text, False),)


def _stripped(toks: list[Tok]) -> list[Tok]:
    return [t for t in toks if t.kind != "ann"]


# in LaTeX math: tokens that end a chain (relations, punctuation, connectives) ...
RELATION_CMDS = frozenset(("\\le", "\\leq", "\\ge", "\\geq", "\\ne", "\\neq", "\\lt", "\\gt",
                           "\\Rightarrow", "\\Longrightarrow", "\\rightarrow", "\\implies", "\\iff",
                           "\\Leftrightarrow", "\\to", "\\in", "\\equiv", "\\pmod", "\\mod", "\\bmod",
                           "\\mid", "\\nmid", "\\quad", "\\qquad", "\\text", "\\therefore", "\\because",
                           "\\Longleftrightarrow", "\\leftarrow", "\\Leftarrow", "\\subset", "\\cup",
                           "\\cap", "\\land", "\\lor", "\\wedge", "\\vee", "\\pm", "\\mp"))
_MODULUS_CMDS = frozenset(("\\pmod", "\\mod", "\\bmod"))
_SEPARATORS = frozenset(",;<>.?")  # not ":": "3:6 = 1:2" is a ratio
_CONNECTIVES = re.compile(r"^\\\w+\s*\{\s*(?:and|or|so|then|if|thus|hence|since|where|when|for|but|i\.e\.|"
                          r"which|giving|gives|we get|because|as|with|or equivalently)?[\s,.;:]*\}$")


def latex_tokens(toks: list[Tok]) -> list[Tok]:
    """Token stream of a LaTeX math span for the chain finder: relations (``\\le``, ``\\Rightarrow``),
    punctuation and ``\\text{ and }`` end a chain; other glyphs (``7@4``, ``|x|``, ``9\\textbf{C}4``) become
    symbols, so the side they belong to is left unchecked instead of being cut into a wrong calculation."""
    out: list[Tok] = []
    modular = False
    for j, t in enumerate(toks):
        if t.kind == "word" and not t.text.startswith("\\") and j + 1 < len(toks) and toks[j + 1].kind == "lp":
            out.append(Tok("var", t.text))  # cis(0), sgn(x): a function applied, its side left unchecked
            continue
        if t.kind == "eq" and modular:
            out.append(Tok("brk", "\\equiv"))  # "= " after a congruence means "is congruent to"
        elif t.kind == "cmd" and t.text in RELATION_CMDS:
            modular = modular or t.text == "\\equiv" or t.text in _MODULUS_CMDS
            if t.text in _MODULUS_CMDS:  # "74 = -1 \pmod{15}": the chain before is a congruence
                k = len(out) - 1
                while k >= 0 and out[k].kind != "brk":
                    if out[k].kind == "eq":
                        out[k] = Tok("brk", "\\equiv")
                    k -= 1
            out.append(Tok("brk", t.text))
        elif t.kind == "brk" and t.text not in _SEPARATORS:
            out.append(Tok("cmd", t.text))
        elif t.kind == "word":
            out.append(Tok("brk", t.text) if _CONNECTIVES.match(t.text) or not t.text.startswith("\\")
                       else Tok("cmd", t.text))
        elif t.kind == "num" and out and out[-1].kind == "rb":
            out += [Tok("op", "*"), t]  # 2^{3}5^{3}: a product
        else:
            out.append(t)
        if modular and t.kind == "cmd" and t.text in _MODULUS_CMDS:
            out.append(Tok("brk", ","))  # the modulus that follows is not a side
    return out


_CONTRA_RE = re.compile(r"contradict|impossible|absurd|no (?:real |integer |positive )?solutions?|not possible|"
                        r"\bfalse\b|cannot|can't|\bnot (?:a solution|true|equal|work|valid)|doesn't work|"
                        r"does not work|would not|wouldn't|\\neq|\\ne\b|≠|"
                        r"units? digit|ones digit|last (?:two )?digits?|remainder|modulo|\bmod\b|congruen|"
                        r"\bwith (?:\d+|one|two|three) (?:\w+ )?(?:left|remaining)\b|\bleft ?over\b",
                        re.IGNORECASE)  # refutations, and digit/residue arithmetic written with "="


def extract_calculations(step: str) -> list[Calculation]:
    """Every calculation in a step: GSM8K ``<<a=b>>`` annotations and ``a op b = c`` chains, found in each
    math span and each stretch of prose separately (:func:`split_math`), so a chain never runs from one
    ``$...$`` span into the next. A step that says its numbers are rounded ("≈", "about", "to the nearest
    tenth") compares them to that precision (:func:`stated_rounding`)."""
    calcs: list[Calculation] = []
    step_approx, precision = stated_rounding(step) if len(step) < 20000 else (False, None)
    toks = tokenize(step)
    for t in toks:
        if t.kind == "ann":
            inner = _with_vars([x for x in tokenize(t.text[2:-2]) if x.kind != "brk"])
            sides, approx = _split_eq(inner)
            sides = [s for s in sides if s]
            c = _make_calc(sides, approx, annotation=True)
            if c is not None and c.ok is not None:
                calcs.append(c)
    segments = split_math(step) if len(step) <= 20000 else ((step, False),)
    n_ann = len(calcs)
    for seg, is_math in segments:
        seg_toks = toks if len(segments) == 1 and not is_math else tokenize(seg)
        seg_toks = _with_vars(_stripped(seg_toks), latex=is_math)
        _chains(latex_tokens(seg_toks) if is_math else seg_toks, calcs, step_approx, precision, prose=not is_math)
    if len(calcs) > n_ann and any(c.ok is False for c in calcs[n_ann:]) and _CONTRA_RE.search(step[:20000]):
        for c in calcs[n_ann:]:  # "we get -6 = 2, which is impossible": a refutation, not a slip
            if c.ok is False:
                c.ok, c.error = None, ""
        calcs[:] = [c for c in calcs if c.ok is not None or c.annotation]
    return calcs


def _chains(toks: list[Tok], calcs: list[Calculation], step_approx: bool, precision: float | None,
            prose: bool = False) -> None:
    """The ``a op b = c`` chains of ``toks`` into ``calcs``. In prose a run that does not start a sentence
    keeps no left side when that side is a lone number that does not hold ("bowled a 120 + ... bowled an 85 = 318", "Remaining
    10 = 62,300/10", "lessons 13,15,17&19 = 4 lessons": a label, a list or the tail of a sum told in
    words) or when a word leads into it and it starts with a sign after a number or an operator a few
    words back ("10 cows on the boat - 6 drowned = 4", "2 tapes * $9/tape + $25 = $43": the left
    operand is among the words; "we get -3 + 5 = 2" is kept)."""
    for run, before, lead in _runs(toks):
        cut = len(run) > MAX_RUN_TOKENS
        if cut:
            run = run[-MAX_RUN_TOKENS:]
            before = None
        if not any(t.kind == "eq" for t in run):
            continue
        sides, approx = _split_eq(run)
        if cut:
            sides[0] = []  # the cut-off start of a long expression is not its left side
        approx = approx or step_approx
        if _modifies(before, sides[0] if sides else []) and sides:
            sides[0] = []  # "half of 50 = 25": the left operand is not the whole expression
        parsed: dict[int, Value | None] = {}  # side index -> its plain reading, from _trim
        if sides and sides[0]:
            sides[0], parsed[0] = _trim(sides[0], left=True)
        if sides and sides[-1]:
            sides[-1], parsed[len(sides) - 1] = _trim(sides[-1], left=False)
        if prose and lead != "start" and len(sides) >= 2 and sides[0] and _told_in_words(
                sides[0], sides[1], before is not None and lead == "number"):
            sides[0] = []
        # split at sides that do not parse (a new chain starts after them)
        chain: list[list[Tok]] = []
        chain_vals: list[list[Value]] = []
        for k, s in enumerate(sides + [[]]):
            if s:  # a literal with a leading zero is a time or a code ("0900 - 0130 = 0730 hours")
                vs, failed = _eval_side(s, parsed.get(k, _UNSET)) if not any(_leading_zero(t) for t in s) \
                    else ([], True)
                if not failed:
                    chain.append(s)
                    chain_vals.append(vs)
                    continue
            if len(chain) >= 2:
                c = _make_calc(chain, approx, annotation=False, vals=chain_vals,
                               precision=precision if approx else None)
                if c is not None and c.ok is not None:
                    calcs.append(c)
            chain, chain_vals = [], []


def _leading_zero(t: Tok) -> bool:
    return t.kind == "num" and t.text[:1] == "0" and t.text[1:2].isdigit()


def _told_in_words(left: list[Tok], right: list[Tok], after_number: bool) -> bool:
    """Whether a prose left side is only part of what the sentence computes: a sign first when words lead
    into it after a number (``after_number``), or a lone number that the next side does not equal (see
    :func:`_chains`)."""
    if left[0].kind == "op" and left[0].text in "+-":
        return after_number
    if len(left) != 1 or left[0].kind != "num":
        return False
    vs, failed = _eval_side(right)
    return not failed and bool(vs) and not any(values_match(left[0].value, v, _decimals(right)) for v in vs)


_BY_OPS = frozenset(("divided", "divide", "divides", "dividing", "multiplied", "multiply", "multiplies",
                     "multiplying", "times", "split", "shared"))


def _modifies(before: str | None, left: list[Tok]) -> bool:
    """Whether the word(s) before a run take its first operand (``half of 50 = 25``, ``twice 12 = 24``); "of"
    after another word only when that word does (``a total of 3+4 = 7`` is a whole calculation); "by" after a
    verb of an operation (``divided by 4 = 5``), or before a lone number (``increase by 20 = 120`` is unclear),
    but not before an expression after another word (``increase by 12000-4000 = 8000`` is whole)."""
    if before is None:
        return False
    first = before.split()[0]
    if before.endswith(" of"):
        return first in _MODIFIERS or first.endswith("%")
    if before == "by" or before.endswith(" by"):
        return first in _BY_OPS or before == "by" or not any(t.kind == "op" for t in left)
    return before in _MODIFIERS


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
