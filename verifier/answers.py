"""Final-answer extraction and equivalence (GSM8K ``#### n`` and MATH ``\\boxed{}`` styles).

``extract_answer`` finds the final answer of a text: the last ``\\boxed{...}``/``\\fbox{...}`` (brace
matched, nested braces allowed), else the last ``#### n`` line, else a ``# Answer`` heading (PRM800K),
else the last "the answer is ..."/"answer: ...", else the text itself when it already looks like a bare
answer, else the last number. ``answers_equal(gold, pred)`` compares the two extracted answers: numbers
(``$1,200``, ``18.00``, ``50%``, ``\\dfrac{3}{4}``, ``-0.5``) exactly on a fast path, everything else
(intervals, tuples, expressions) with math-verify, gold first, behind size guards. Example::

    >>> extract_answer("So she has 48 + 24 = 72 clips.\\n#### 72")
    '72'
    >>> answers_equal("\\\\frac12", "The answer is 0.5.")
    True
"""

from __future__ import annotations

import re
import threading
from functools import lru_cache

from verifier.arith import EvalError, Tok, Value, evaluate_tokens, normalize_chars, tokenize, values_match

MAX_ANSWER_CHARS = 400  # longer candidate answers are compared as strings only
MATH_VERIFY_TIMEOUT_S = 1
MAX_BOXES = 50  # only the last boxes of a text are read

_BOX_RE = re.compile(r"\\(?:boxed|fbox|framebox)\b")
_HASH_RE = re.compile(r"####[ \t]*([^\n]*)")
_HEADING_RE = re.compile(r"(?m)^[ \t]*#{1,3}[ \t]*(?:Final[ \t]+)?Answer[ \t]*:?[ \t]*\n+[ \t]*([^\n]+)")
_ANSWER_IS_RE = re.compile(
    r"(?i)\banswer\b(?:[ \t]+(?:to[ \t]+(?:the|this)[ \t]+(?:question|problem)[ \t]+)?is)?[ \t]*"
    r"(?:equal[ \t]+to|:|=|is)?[ \t]*:?[ \t]*(?:\*\*)?[ \t]*(?=\S)"
)
_NUMBER_RE = re.compile(r"-?\$?\s?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?(?:/\d+(?:\.\d+)?)?|\.\d+)")
_WORD_RE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}")


def _brace_pairs(text: str) -> dict[int, int]:
    """Index of every ``{`` mapped to the index of its matching ``}`` (one linear pass; ``\\{`` skipped)."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            stack.append(i)
        elif c == "}" and stack:
            pairs[stack.pop()] = i
        i += 1
    return pairs


def boxed_answers(text: str) -> list[str]:
    """Contents of every ``\\boxed{...}``/``\\fbox{...}``, in order (``\\boxed 5`` works too)."""
    out = []
    pairs: dict[int, int] | None = None
    for m in list(_BOX_RE.finditer(text))[-MAX_BOXES:]:
        i = m.end()
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            if pairs is None:
                pairs = _brace_pairs(text)
            end = pairs.get(i)
            if end is not None:
                out.append(text[i + 1:end].strip())
        else:
            tail = re.match(r"[^\s$]+", text[i:i + 100])
            if tail:
                out.append(tail.group(0))
    return out


def _sentence_end(s: str) -> str:
    """Cut an answer phrase at its sentence end, keeping math spans (``$...$``, ``\\(...\\)``) whole."""
    s = s.lstrip()
    for open_, close in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(open_):
            j = s.find(close, len(open_))
            if j > 0:
                return s[len(open_):j].strip()
    m = re.search(r"\n|(?<!\d)\.(?!\d)|\.(?=\s|$)|[;!?]|,\s+(?:so|which|since|because|and)\b", s)
    out = s[:m.start()] if m else s
    return out.strip().strip("*").strip()


def answer_candidates(text: str) -> list[tuple[str, str]]:
    """Every explicitly marked final answer in order of strength: (kind, answer) pairs.

    Kinds: ``boxed`` (all boxes), ``hash`` (all ``####`` lines), ``heading``, ``answer_is``.
    """
    return list(_answer_candidates(text))


@lru_cache(maxsize=256)
def _answer_candidates(text: str) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = [("boxed", b) for b in boxed_answers(text)]
    out += [("hash", _sentence_end(m.group(1)) or m.group(1).strip()) for m in _HASH_RE.finditer(text)]
    out += [("heading", m.group(1).strip()) for m in _HEADING_RE.finditer(text)]
    for m in _ANSWER_IS_RE.finditer(text):
        ans = _sentence_end(text[m.end():m.end() + 300])
        if ans and not ans.lower().startswith(("is ", "to ", "the question", "this ")):
            ans = boxed_answers(ans)[-1] if "\\boxed" in ans and boxed_answers(ans) else ans
            out.append(("answer_is", ans))
    return tuple((k, a) for k, a in out if a)


def looks_bare(text: str) -> bool:
    """A text that is already an answer: one short line without sentence words (``\\frac{1}{2}``, ``18 cm``)."""
    t = text.strip()
    if not t or len(t) > 120 or "\n" in t:
        return False
    plain = re.sub(r"\\(?:text|mathrm|mbox|textbf|operatorname)\s*\{[^{}]*\}", " u ", t)
    return len(_WORD_RE.findall(plain)) <= 2


def extract_answer(text: str) -> str | None:
    """The final answer in ``text`` (see the module doc for the order of rules), or None."""
    if not isinstance(text, str):
        return None
    text = text.strip()
    if not text:
        return None
    order = ("boxed", "hash", "heading", "answer_is")
    cands = answer_candidates(text)
    for kind in order:
        found = [a for k, a in cands if k == kind]
        if found:
            return found[-1]
    if looks_bare(text):
        return _strip_math(text)
    nums = _NUMBER_RE.findall(text[-5000:])
    if nums:
        return nums[-1].replace("$", "").replace(" ", "").strip()
    return None


# ---------------------------------------------------------------- normalisation and numbers
_UNIT_TAIL_RE = re.compile(
    r"(?:\s*\\(?:text|mathrm|mbox|textbf|operatorname)\s*\{[^{}]*\}|\s*\^\s*\{?\\circ\}?|°|\s*\\%|%"
    r"|\s+[A-Za-z][A-Za-z .]*|\s*\^\{?[23]\}?|\.)+$"
)


def _strip_math(s: str) -> str:
    s = s.strip()
    for a, b in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(a) and s.endswith(b) and len(s) >= len(a) + len(b):
            s = s[len(a):len(s) - len(b)].strip()
    return s


def normalize_answer(ans: str) -> str:
    """A canonical string form for string comparison (spaces, ``$``, ``\\left``, ``\\dfrac``, text wrappers)."""
    s = normalize_chars(_strip_math(ans))
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = re.sub(r"\\(?:left|right|displaystyle|!|,|;|:| )", "", s)
    s = re.sub(r"\\(?:text|textbf|mathrm|mbox)\s*\{([^{}]*)\}", r"\1", s)
    s = s.replace("\\$", "").replace("$", "")
    s = re.sub(r"^[A-Za-z]\s*=\s*", "", s) if s.count("=") == 1 else s
    s = re.sub(r"\s+", "", s).rstrip(".").lower()
    return s


def parse_number(ans: str) -> tuple[Value, bool] | None:
    """(value, is_percent) when the answer is a plain number, fraction or simple arithmetic; else None.

    Units, currency, degree signs and trailing words are dropped: ``$1,200.00`` -> 1200,
    ``18 cm`` -> 18, ``50\\%`` -> (1/2, True), ``-\\dfrac{3}{4}`` -> -3/4.
    """
    s = normalize_chars(_strip_math(ans)).strip()
    if not s or len(s) > MAX_ANSWER_CHARS:
        return None
    if s.count("=") == 1:
        lhs, rhs = s.split("=")
        if re.fullmatch(r"\s*[A-Za-z]\w*\s*", lhs):
            s = rhs.strip()
    pct = bool(re.search(r"(?:\\%|%|\bpercent)\s*\.?\s*$", s))
    s = re.sub(r"^\s*(?:\\\$|\$|USD|Rs\.?|€|£)\s*", "", s)
    s = _UNIT_TAIL_RE.sub("", s).strip()
    s = re.sub(r"^\s*(?:\\\$|\$)\s*", "", s)
    s = s.replace("-\\$", "-").replace("\\$", "")
    if not s:
        return None
    toks = tokenize(s)
    if not toks or any(t.kind not in ("num", "op", "lp", "rp", "lb", "rb", "frac", "sqrt") for t in toks):
        return None
    if len(toks) == 1 and toks[0].pct:
        toks = [Tok("num", toks[0].text, toks[0].value * 100, False, toks[0].decimals)]
    try:
        return evaluate_tokens(toks), pct
    except (EvalError, ZeroDivisionError, OverflowError, ValueError):
        return None


def numbers_equal(g: tuple[Value, bool], p: tuple[Value, bool]) -> bool:
    """Exact (or float-rounding-tolerant) equality; a percent may be read as its value or value/100."""
    (gv, gp), (pv, pp) = g, p
    options = [(gv, pv)]
    if pp and not gp:
        options.append((gv, pv / 100))
    if gp and not pp:
        options.append((gv / 100, pv))
    return any(values_match(a, b) for a, b in options)


# ---------------------------------------------------------------- math-verify behind guards
def _too_big(expr) -> bool:
    """True when a sympy expression holds a power/factorial whose evaluation could hang."""
    import sympy

    try:
        for node in sympy.preorder_traversal(expr):
            if isinstance(node, sympy.Pow):
                e = node.exp
                if e.has(sympy.Pow) or e.has(sympy.factorial):
                    return True
                if e.is_Number and abs(float(e)) > 1000:
                    return True
            elif isinstance(node, sympy.factorial | sympy.factorial2 | sympy.binomial | sympy.gamma):
                arg = node.args[0]
                if not arg.is_Number or abs(float(arg)) > 500:
                    return True
            elif isinstance(node, sympy.Integer) and node.p.bit_length() > 3000:
                return True
    except Exception:  # noqa: BLE001 - a tree we cannot inspect is not handed on
        return True
    return False


def math_verify_equal(gold: str, pred: str) -> bool | None:
    """math-verify's verdict on two extracted answers (gold first); None when it cannot judge."""
    if len(gold) > MAX_ANSWER_CHARS or len(pred) > MAX_ANSWER_CHARS:
        return None
    from math_verify import parse, verify

    main = threading.current_thread() is threading.main_thread()
    timeout = MATH_VERIFY_TIMEOUT_S if main else None
    try:
        g = parse(f"${_strip_math(gold)}$", parsing_timeout=timeout)
        p = parse(f"${_strip_math(pred)}$", parsing_timeout=timeout)
        if not g or not p:
            return None
        if any(_too_big(x) for x in (*g, *p) if not isinstance(x, str)):
            return None
        return bool(verify(g, p, timeout_seconds=timeout))
    except Exception:  # noqa: BLE001 - math-verify failures are "cannot judge", not crashes
        return None


def answers_equal(gold: str, pred: str) -> bool:
    """Whether ``pred`` states the same final answer as ``gold``; both may be bare answers or full texts."""
    g = extract_answer(gold) if isinstance(gold, str) else None
    p = extract_answer(pred) if isinstance(pred, str) else None
    if g is None or p is None:
        return False
    gn, pn = parse_number(g), parse_number(p)
    if gn is not None and pn is not None:
        return numbers_equal(gn, pn)
    if normalize_answer(g) == normalize_answer(p):
        return True
    verdict = math_verify_equal(g, p)
    return bool(verdict)
