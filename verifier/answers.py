"""Final-answer extraction and equivalence (GSM8K ``#### n`` and MATH ``\\boxed{}`` styles).

``extract_answer`` finds the final answer of a text: the last ``\\boxed{...}``/``\\fbox{...}`` (brace
matched, nested braces allowed), else the last ``#### n`` line, else a ``# Answer`` heading (PRM800K),
else the last "the answer is ..."/"answer: ..."/"Final Answer: The final answer is ...", else the text
itself when it already looks like a bare answer, else the last math span of the last line (``... so the
solution is $x \\geq 5$.``) or an interval/LaTeX phrase closing it, else the last number.

``answers_equal(gold, pred)`` (gold first) is equal when any of these says so:

1. the normalised comparison of the two extracted answers: numbers exactly (``$1,200``, ``18.00``,
   ``50%``, ``\\dfrac{3}{4}``, mixed numbers ``1\\frac12`` = 3/2, units/currency/degrees dropped); a
   decimal comma by context (:func:`decimal_comma`: ``1,000`` is a thousand, ``1,22`` is 1.22); a decimal
   against an exact irrational at the decimal's stated precision (:func:`decimal_matches_exact`:
   ``40\\pi`` = ``125.66`` = ``125.663``, with at least ``MIN_APPROX_SIG_DIGITS`` significant digits;
   rationals stay exact, ``1/3`` != ``0.33``); matrices cell by cell; intervals and unions (brackets
   must match; ``x \\leq 3`` = ``(-\\infty, 3]``); relations with ``\\geq``/``>=``/``≥``, ``\\neq``/``!=``,
   ``\\lt`` ... read alike and flipped (``5 \\leq x`` = ``x \\geq 5``); lists and sets order-free, tuples
   in order; several boxed answers against a list or set gold (``1, 2`` vs ``\\boxed{1}`` and ``\\boxed{2}``);
   ``\\mathrm{i}`` as the imaginary unit;
2. math-verify on the extracted answers in their canonical form (``$...$``);
3. math-verify on the texts as it would read them alone (a full text as is, a bare answer in ``$...$``),
   and on the raw bare strings where its parse read each whole (not just their last number).

Only "equal" verdicts are combined, so a case math-verify gets right as equal stays equal; the
normalised layer's own readings are guarded by not-equal cases in ``tests/verifier/answer_cases.jsonl``
(``1,000`` vs ``1``, ``x \\geq 5`` vs ``x \\leq 5``, ``(1,2)`` vs ``[1,2]``, transposed matrices ...). Bounded:
texts are read from their last ``MAX_TEXT_CHARS``, math-verify sees at most ``MAX_MV_TEXT_CHARS`` of a
text and ``MAX_ANSWER_CHARS`` of an answer, runs under its timeout in the main thread, and never gets
towers of powers or huge factorials (:func:`_too_big`); nothing is ``eval``-ed. Example::

    >>> extract_answer("So she has 48 + 24 = 72 clips.\\n#### 72")
    '72'
    >>> answers_equal("\\\\frac12", "The answer is 0.5.")
    True
"""

from __future__ import annotations

import math
import re
import threading
import zlib
from fractions import Fraction
from functools import lru_cache

from verifier.arith import EvalError, Tok, Value, evaluate_tokens, normalize_chars, tokenize, values_match

MAX_ANSWER_CHARS = 400  # longer candidate answers are compared as strings only
MATH_VERIFY_TIMEOUT_S = 1
MAX_BOXES = 50  # only the last boxes of a text are read

_BOX_RE = re.compile(r"\\(?:boxed|fbox|framebox)\b")
# "#### 42"; not a "#### Final Answer" heading (its answer is on the lines below: _HEADING_RE)
_HASH_RE = re.compile(r"####(?![ \t]*(?:\*\*)?(?:Final[ \t]+)?Answer\b[ \t]*:?[ \t]*(?:\*\*)?[ \t]*(?:\n|$))[ \t]*([^\n]*)",
                      re.IGNORECASE)
_HASH_LABEL_RE = re.compile(r"(?i)^(?:\*\*)?(?:final[ \t]+)?answer[ \t]*(?:\*\*)?[ \t]*:[ \t]*(?:\*\*)?[ \t]*")  # "#### Answer: 42"
_HEADING_RE = re.compile(r"(?m)^[ \t]*#{1,4}[ \t]*(?:\*\*)?(?:Final[ \t]+)?Answer[ \t]*:?[ \t]*(?:\*\*)?[ \t]*:?[ \t]*\n+",
                         re.IGNORECASE)
_ANSWER_TAG_RE = re.compile(r"(?i)<answer>((?:(?!</?answer>).){1,2000}?)</answer>", re.DOTALL)  # R1-style tags
_THINK_END_RE = re.compile(r"(?i)</think>")
_CHAT_END_RE = re.compile(r"<\|(?:im_end|endoftext|eot_id|end_of_text|im_start)\|>|</s>|<\|end\|>")
_NEW_TURN_RE = re.compile(r"\n[ \t]*(?:Question|Problem|Q|Human|User)[ \t]*\d*[ \t]*:")
_ANSWER_IS_RE = re.compile(
    # "The answer is" / "Answer:" and a display on the next line ("The answer is\n$$\n\frac12\n$$")
    r"(?i)(?<![</])\banswer\b(?:\*\*)?(?:(?:[ \t]+(?:to[ \t]+(?:the|this)[ \t]+(?:question|problem)[ \t]+)?is|[ \t]*:)[ \t]*:?[ \t]*"
    r"(?:\*\*)?[ \t]*\n\s*(?=\$|\\\[|\\\()"
    # "The answer is 5", "answer: 5", "answer = 5"
    r"|(?:[ \t]+(?:to[ \t]+(?:the|this)[ \t]+(?:question|problem)[ \t]+)?is)?[ \t]*"
    r"(?:equal[ \t]+to|:|=|is)?[ \t]*:?[ \t]*(?:\*\*)?[ \t]*(?=\S))"
)
# words that start a clause, not an answer: after "answer" with no "is", ":" or "=", such a word means the
# sentence goes on about the answer ("check our answer by ...", "the answer because ...")
_PROSE_START_RE = re.compile(r"(?i)(?:by|because|since|for|from|in|into|of|on|with|without|we|you|i|it|that|"
                             r"which|when|if|and|or|but|so|as|at|using|after|before|again|now|here|there|"
                             r"first|choices?|options?|should|would|could|will|must|can|may|might|"
                             r"seems?|looks?|makes?|has|have|had|was|were|are|be|been|not|yet|still|"
                             r"directly|correctly|carefully|quickly)\b")
_NUMBER_RE = re.compile(
    r"-?\$?\s?(?:\d+ \d+/\d+(?![\d./])"  # a mixed number, 1 1/2 (and 1½ once normalised)
    r"|\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+,\d{1,2}(?![\d,])|\d+(?:\.\d+)?(?:/\d+(?:\.\d+)?)?|\.\d+)"
)
_MIXED_NUM_RE = re.compile(r"(-?)(\d+) (\d+)/(\d+)")
_EXPONENT_RE = re.compile(r"\^\s*(?:\{[^{}]{0,20}\}|-?\d+)")


def _numbers(text: str) -> list[str]:
    """The numeric literals of a text, in order, as answers (``$1,200`` -> ``1,200``; ``1 1/2`` and ``1½`` ->
    ``1 1/2``; an improper ``5 10/2`` is two numbers, the last ``10/2``). An exponent is no number of its own:
    ``1,000.99m²`` ends in 1,000.99, not 2."""
    out = []
    for n in _NUMBER_RE.findall(_EXPONENT_RE.sub(" ", normalize_chars(text))):
        m = _MIXED_NUM_RE.fullmatch(n.replace("$", "").strip())
        if m is None:
            out.append(n.replace("$", "").replace(" ", "").strip())
        elif int(m[3]) < int(m[4]):
            out.append(f"{m[1]}{m[2]} {m[3]}/{m[4]}")
        else:
            out += [m[1] + m[2], f"{m[3]}/{m[4]}"]
    return out


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

    Kinds: ``boxed`` (all boxes), ``tag`` (``<answer>...</answer>``), ``hash`` (all ``####`` lines), ``heading``,
    ``answer_is``.
    """
    return list(_answer_candidates(text))


_MARKER_HINT_RE = re.compile(r"\\(?:boxed|fbox|framebox)\b|####|answer", re.IGNORECASE)  # every marker holds one


@lru_cache(maxsize=256)
def _answer_candidates(text: str) -> tuple[tuple[str, str], ...]:
    if not _MARKER_HINT_RE.search(text):  # most steps: no marker at all, so none of the five searches below
        return ()
    out: list[tuple[str, str]] = [("boxed", b) for b in boxed_answers(text)]
    out += [("tag", _block_answer(m.group(1))) for m in _ANSWER_TAG_RE.finditer(text)]
    for m in _HASH_RE.finditer(text):
        line = _HASH_LABEL_RE.sub("", m.group(1))
        out.append(("hash", _sentence_end(line) or line.strip()))
    out += [("heading", _block_answer(text[m.end():m.end() + 400])) for m in _HEADING_RE.finditer(text)]
    for m in _ANSWER_IS_RE.finditer(text):
        ans = _sentence_end(_after_text_marker(text, m.start(), m.end()))
        if ans and not m.group(0)[len("answer"):].strip(" \t*") and _PROSE_START_RE.match(ans):
            continue  # "verify our answer by listing ...", "that's our answer because ...": no answer follows
        if ans and not ans.lower().startswith(("is ", "to ", "the question", "this ")):
            ans = boxed_answers(ans)[-1] if "\\boxed" in ans and boxed_answers(ans) else ans
            out.append(("answer_is", ans))
    return tuple((k, a) for k, a in out if a)


_MARKER_GROUP_END_RE = re.compile(r"^\}\s*(?:(?:\\[ ,;:!]|\\q?quad|~)\s*)*")  # "} ", "}\ ", "}\quad "


def _open_span(before: str) -> str | None:
    """The closing delimiter of the math span open at the end of ``before`` (``$$``, ``$``, ``\\]``,
    ``\\)``), or None outside math."""
    before = before.replace("\\$", "")  # an escaped dollar is a price, not a delimiter
    if before.count("$$") % 2:
        return "$$"
    if (before.count("$") - 2 * before.count("$$")) % 2:
        return "$"
    for open_, close in (("\\[", "\\]"), ("\\(", "\\)")):
        if before.rfind(open_) > before.rfind(close):
            return close
    return None


def _after_text_marker(text: str, start: int, end: int) -> str:
    """The text after an answer marker (``text[start:end]``); for a marker written inside a text group
    (``$$\\text{Answer: } 18$$``, ``\\textbf{Final Answer:}\\ \\frac12``, ``$\\text{Answer:}$ $18$``), without the
    group's closing brace and the spacing after it, and up to the end of the math span the group sat in."""
    tail = text[end:end + 300]
    if not tail.startswith("}"):
        return tail
    tail = _MARKER_GROUP_END_RE.sub("", tail)
    close = _open_span(text[max(0, start - 2000):start])
    if close is None:  # outside math, or a price's "$" threw the count: a lone "$" ending the line closes the span
        line = tail.split("\n", 1)[0].rstrip(" .")
        return line[:-1] if re.search(r"(?<!\\)\$$", line) and line.replace("\\$", "").count("$") % 2 else tail
    m = re.search(r"(?<!\\)" + re.escape(close), tail)
    if m is None:
        return tail
    return tail[m.end():] if not tail[:m.start()].strip() else tail[:m.start()]


def _block_answer(block: str) -> str:
    """The answer under an "Answer" heading: its first sentence or display (``$$\n42\n$$``) when that is an
    answer by itself, else what closes the block's first paragraph (its closing phrase, else its last number)."""
    block = block.lstrip()
    first = _sentence_end(block)
    if not first or looks_bare(first) or block.startswith(("$", "\\[", "\\(")):
        return first
    para = block.split("\n\n", 1)[0]
    closing = _closing_phrase(para)
    if closing is not None:
        return closing
    nums = _numbers(para)
    return nums[-1] if nums else first


def looks_bare(text: str) -> bool:
    """A text that is already an answer: one short line without sentence words (``\\frac{1}{2}``, ``18 cm``)."""
    t = text.strip()
    env = "\\begin{" in t  # a matrix may be long and span lines
    if not t or len(t) > (300 if env else 120) or ("\n" in t and not env):
        return False
    plain = re.sub(r"\\(?:text|mathrm|mbox|textbf|operatorname)\s*\{[^{}]*\}", " u ", t)
    plain = re.sub(r"\\(?:begin|end)\s*\{[^{}]*\}(?:\s*\{[^{}]*\})?", " ", plain)  # \begin{array}{cc}
    if "$" in t and not (t.startswith("$") and t.endswith("$")):
        if _WORD_RE.search(re.sub(r"\$[^$]*\$", " ", plain)):
            return False  # words around a math span: a sentence ("So $a + b = 7$.")
    return len(_WORD_RE.findall(plain)) <= 2


_MATH_SPAN_RE = re.compile(r"\$\$(.{1,300}?)\$\$|\$(.{1,300}?)\$|\\\((.{1,300}?)\\\)|\\\[(.{1,300}?)\\\]", re.DOTALL)
_DISPLAY_END_RE = re.compile(r"(?:\$\$[^$]{1,300}\$\$|\\\[(?:(?!\\\[).){1,300}\\\])$", re.DOTALL)
_CLOSING_IS_RE = re.compile(
    r"(?i)\b(?:is|are|equals|becomes|gives|get|obtain|have)[ \t]*:?[ \t]+(?P<ans>[^\n]{1,200}?)[ \t]*[.!]?[ \t]*$"
)


def _closing_phrase(text: str) -> str | None:
    """An unmarked answer that closes a solution: the last math span of its last line when nothing
    numeric follows it (``... so the result is $x \\geq 5$.``; of ``$a = b = 7$`` the part after the last
    ``=``), else a bare-looking phrase after a closing "is"/"equals" (``the solution set is [0, \\infty).``)."""
    tail = text[-2000:].rstrip()
    lines = [ln for ln in tail.splitlines() if ln.strip()]
    if not lines:
        return None
    last = lines[-1]
    cut = max(0, len(tail) - 320)
    display = _DISPLAY_END_RE.search(tail, cut)
    if display and "\n" in display.group(0).strip():  # a display over several lines: one line for the rules below
        line_start = tail.rfind("\n", 0, display.start()) + 1
        last = " ".join(tail[line_start:].split())
    spans = list(_MATH_SPAN_RE.finditer(last))
    if spans:
        m = spans[-1]
        after = last[m.end():]
        inner = next(g for g in m.groups() if g is not None).strip()
        if inner and not re.search(r"\d", after) and re.search(r"[\d\\]", inner):
            if "=" in inner and not re.search(r"[<>]|\\[lg]eq?\b|\\neq?\b", inner):
                inner = inner.rsplit("=", 1)[1].strip()
            return inner.rstrip(".").strip() or None
        return None
    m = _CLOSING_IS_RE.search(last)
    if m:
        ans = m.group("ans").strip().strip("*").strip()
        if ans and looks_bare(ans) and re.search(r"[\d\\]", ans) and not re.search(r"[=]", ans):
            if re.search(r"[\[\]()<>]|\\|,", ans):  # an interval, tuple or LaTeX: the last number would cut it
                return ans
    return None


_LEAD_RE = re.compile(r"(?i)^(?:therefore|thus|hence|so|finally)\s*,?\s+(?=\S)")


def after_thinking(text: str) -> str:
    """The part of a model's output that holds its answer: what follows a reasoning model's last ``</think>``
    (when anything does), up to a chat-end token (``<|im_end|>``, ``</s>``, ...) and, after an answer, up to a
    new turn the model went on to write ("\n\nQuestion: ...", "\nHuman: ..."), as lm-evaluation-harness's
    stop sequences cut it."""
    ends = list(_THINK_END_RE.finditer(text))
    if ends and text[ends[-1].end():].strip():
        text = text[ends[-1].end():].strip()
    return end_of_output(text)


def end_of_output(text: str) -> str:
    """``text`` up to a chat-end token (``<|im_end|>``, ``</s>``, ...) and, after an answer, up to a new turn the
    model went on to write ("\n\nQuestion: ...", "\nHuman: ..."); the whole text when there is neither."""
    end = _CHAT_END_RE.search(text)
    if end and text[:end.start()].strip():
        text = text[:end.start()].rstrip()
    turn = _NEW_TURN_RE.search(text)
    if turn and _answer_candidates(text[:turn.start()]):
        text = text[:turn.start()].rstrip()
    return text


def extract_answer(text: str) -> str | None:
    """The final answer in ``text`` (see the module doc for the order of rules), or None."""
    if not isinstance(text, str):
        return None
    text = text.strip()
    if not text:
        return None
    text = after_thinking(text)
    order = ("boxed", "tag", "hash", "heading", "answer_is")
    cands = answer_candidates(text)
    for kind in order:
        found = [a for k, a in cands if k == kind]
        if found:
            return found[-1]
    lead = _LEAD_RE.sub("", text).strip("`*").strip()  # "**18**", "Therefore, \\frac{4}{7}.", "`4/7`" (math spans: the closing phrase's)
    if lead and lead != text and "$" not in lead and looks_bare(lead):
        return lead
    if looks_bare(text) or (len(text) <= 80 and word_number(text) is not None):
        return _strip_math(text)
    closing = _closing_phrase(text)
    if closing is not None:
        return closing
    nums = _numbers(text[-5000:])
    return nums[-1] if nums else None


# ---------------------------------------------------------------- normalisation and numbers
# each repetition is atomic ("(?>"): "\s+[A-Za-z][A-Za-z .]*" can split a run of words many ways, and a
# prose tail that fails at "$" (an "answer is" sentence) backtracked for seconds
_UNIT_TAIL_RE = re.compile(
    r"(?>\s*\\(?:text|mathrm|mbox|textbf|operatorname)\s*\{[^{}]*\}|\s*\^\s*\{?\\circ\}?|°|\s*\\%|%"
    r"|\s+[A-Za-z][A-Za-z .]*|(?<=\d)(?!pi(?![A-Za-z]))[A-Za-z]{2,}|\s*\^\{?[23]\}?|\.)+$"
)


def _strip_math(s: str) -> str:
    s = s.strip()
    for a, b in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(a) and s.endswith(b) and len(s) >= len(a) + len(b):
            s = s[len(a):len(s) - len(b)].strip()
    return s


_TEXT_WRAP_RE = re.compile(r"\\(?:text|textbf|mathrm|mbox)\s*\{([^{}]*)\}")  # \text{...} and its kin


def normalize_answer(ans: str) -> str:
    """A canonical string form for string comparison (spaces, ``$``, ``\\left``, ``\\dfrac``, text wrappers)."""
    s = _plain_latex(normalize_chars(_strip_math(ans)))
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = re.sub(r"(?<!\\)\\(?:left|right|displaystyle|!|,|;|:| )", "", s)  # not the "\\\\" row break
    s = _TEXT_WRAP_RE.sub(r"\1", s)
    s = s.replace("\\$", "").replace("$", "")
    s = re.sub(r"^[A-Za-z]\s*=\s*", "", s) if s.count("=") == 1 else s
    s = re.sub(r"\s+", "", s).rstrip(".").lower()
    return s


# a whole part and a fraction: 1\frac12, 2 \frac{3}{4} (groups: whole, numerator, denominator; see _mixed_value)
_MIXED = r"(\d{1,9})\s*\\[dt]?frac\s*(\{\s*\d{1,9}\s*\}|\d)\s*(\{\s*\d{1,9}\s*\}|\d)"
_MIXED_RE = re.compile(rf"\s*(-?)\s*{_MIXED}\s*")


def _mixed_value(whole: str, num: str, den: str) -> Fraction | None:
    """The value of a mixed number from :data:`_MIXED`'s groups, or None when the fraction is not proper."""
    a, b = int(num.strip("{} ")), int(den.strip("{} "))
    return Fraction(int(whole)) + Fraction(a, b) if 0 < a < b else None


_REPEATING_RE = re.compile(r"\s*(-?)\s*(\d{0,12})\.(\d{0,12})\\overline\s*\{\s*(\d{1,12})\s*\}\s*")


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
    rep = _REPEATING_RE.fullmatch(s)
    if rep is not None:  # 0.\overline{3} = 1/3, 1.2\overline{45} = 1.2454545...
        sign, whole, fixed, cycle = rep.group(1), rep.group(2) or "0", rep.group(3), rep.group(4)
        v = (Fraction(int(whole + fixed + cycle) - int(whole + fixed), 10 ** len(fixed) * (10 ** len(cycle) - 1)))
        return (-v if sign else v), False
    mixed = _MIXED_RE.fullmatch(s)
    if mixed is not None:  # 1\frac12, 2 \frac{3}{4}: a whole part and a proper fraction
        v = _mixed_value(*mixed.group(2, 3, 4))
        if v is not None:
            return (-v if mixed.group(1) else v), False
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


# ---------------------------------------------------------------- canonical forms
MAX_TEXT_CHARS = 20000  # longer texts are read from their tail
MAX_MV_TEXT_CHARS = 3000  # math-verify reads at most this much of a full solution (its tail)
MAX_ELEMENTS = 30  # lists, sets, unions and matrices with more parts are compared by math-verify only
MIN_APPROX_SIG_DIGITS = 3  # a decimal stands for an irrational value only with this many significant digits
FLOAT_ROUNDING = 6  # math-verify's float_rounding (decimal places), overridable per call

_REL_SUBS = (
    (re.compile(r"\\geqslant|\\geq|\\ge(?![A-Za-z])|≥|>=|=>|⩾"), r" \\geq "),
    (re.compile(r"\\leqslant|\\leq|\\le(?![A-Za-z])|≤|<=|=<|⩽"), r" \\leq "),
    (re.compile(r"\\neq|\\ne(?![A-Za-z])|≠|!=|=/="), r" \\neq "),
    (re.compile(r"\\lt(?![A-Za-z])"), " < "),
    (re.compile(r"\\gt(?![A-Za-z])"), " > "),
)
_IMAG_RE = re.compile(r"\\(?:mathrm|text|textrm|mathit|operatorname|rm)\s*\{\s*i\s*\}|\{\\rm\s+i\}")
_TRIG_RE = re.compile(r"\\(?:sin|cos|tan|cot|sec|csc)(?![A-Za-z])")
_DEGREES_RE = re.compile(r"(\d+(?:\.\d+)?)\s*\^\s*(?:\{\s*\\circ\s*\}|\\circ)")
_EULER_RE = re.compile(r"\\(?:mathrm|text|textrm|mathit|operatorname|rm)\s*\{\s*e\s*\}|\{\\rm\s+e\}")
_INF_RE = re.compile(r"\\infty|∞|\\inf(?![A-Za-z])|\binfinity\b|\binf\b")
_UNION_RE = re.compile(r"\\cup|∪|(?<=[\])])\s*U\s*(?=[\[(])")
_SINGLE_COMMA_NUM_RE = re.compile(
    r"(?P<pre>\s*(?:[A-Za-z]\s*=\s*)?(?:\\\$|\$)?\s*)(?P<sign>-?)(?P<ip>\d+)(?:,|\{,\})(?P<fp>\d+)(?P<post>[^\d,]*)"
)


def decimal_comma(s: str) -> str:
    """``1,22`` -> ``1.22`` when ``s`` is one number with one comma that is not a thousands separator.

    The rule: a comma between digits is a thousands separator when exactly three digits follow it
    and the integer part before it is non-zero (``1,000`` = 1000, ``12,500`` = 12500, and
    ``1,234,567`` with several groups); otherwise (``1,22``, ``0,125``, ``3,5``, ``12,3456``) it is a
    decimal comma. Lists (``1, 2`` with a space, several commas) are left alone.
    """
    m = _SINGLE_COMMA_NUM_RE.fullmatch(s)
    if m is None:
        return s
    pre, sign, ip, fp, post = m.group("pre", "sign", "ip", "fp", "post")
    if len(fp) == 3 and not ip.startswith("0") and len(ip) <= 3:
        return f"{pre}{sign}{ip}{fp}{post}"
    return f"{pre}{sign}{ip}.{fp}{post}"


_DOUBLED_CMD_RE = re.compile(
    r"(?<!\\)\\\\(?=(?:[dt]?frac|sqrt|left|right|leq?|geq?|neq?|lt|gt|pi|infty|cdot|times|pm|cup|in|text|mathrm)(?![A-Za-z]))"
)
_PY_POW_RE = re.compile(r"\*\*\s*(\([^()]{1,40}\)|[\w.]{1,20})")
_FUNC_HEAD_RE = re.compile(r"^[A-Za-z]\s*\(\s*[A-Za-z](?:\s*,\s*[A-Za-z]){0,3}\s*\)\s*=\s*(?=\S)")
_EMPTY_SET_RE = re.compile(r"\\varnothing(?![A-Za-z])|∅|\\\{\s*\\\}")
_STYLE_RE = re.compile(r"\\(?:mathcal|mathbf|mathit|mathsf|boldsymbol|textit|textsf)\s*\{([^{}]{1,40})\}")


def _plain_latex(s: str) -> str:
    """Repairs that keep the meaning: a doubled backslash before a command (``\\\\le`` from an over-escaped
    string) as one, Python's ``x**2`` as ``x^{2}``, ``f(x) = 2x`` as ``2x``, ``11,\\!111`` (thousands) as ``11111``, style wrappers
    (``\\mathcal{B}``, ``\\mathbf{v}``) dropped, a markdown code tick or a closing ``.``/``,`` (not ``...``) dropped."""
    s = _DOUBLED_CMD_RE.sub(lambda m: "\\", s)
    if "**" in s:
        s = _PY_POW_RE.sub(r"^{\1}", s)
    s = re.sub(r"(?<=\d),\\!\s*(?=\d)", "", s)
    s = _STYLE_RE.sub(r"\1", s)
    s = _EMPTY_SET_RE.sub(r"\\emptyset", s)
    if s.count("=") == 1:
        s = _FUNC_HEAD_RE.sub("", s)
    return re.sub(r"(?<=[^.\s])\s*[.,]$", "", s.strip("`").strip())


# a mixed number before a factor: 2\frac{1}{4}\pi is (2 + 1/4)\pi, as a whole answer 2\frac14 is 9/4
_MIXED_FACTOR_RE = re.compile(rf"(?<![\w.}}^_\\]){_MIXED}(?=\s*(?:\\pi|\\sqrt|[A-Za-z]))")


def _mixed_factor(m: re.Match) -> str:
    v, den = _mixed_value(*m.group(1, 2, 3)), int(m.group(3).strip("{} "))
    return m.group(0) if v is None else f"\\frac{{{v * den}}}{{{den}}}"  # 2\frac{2}{4}: \frac{10}{4}


def _canon(ans: str) -> str:
    """A canonical LaTeX form for math-verify and for structure: relations as ``\\geq``/``\\leq``/``\\neq``,
    ``\\mathrm{i}`` as ``i``, ``\\dfrac`` as ``\\frac``, no ``\\left``/``\\right``/spacing commands, no
    ``\\$``. A comma stays a comma (``1,2`` may be a list): the decimal reading is the number paths'."""
    s = _plain_latex(normalize_chars(_strip_math(ans)).strip())
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = re.sub(r"\\(?:left|right|big|Big|bigg|Bigg)(?![A-Za-z])|\\displaystyle|(?<!\\)\\[!,;: ]|~", " ", s)
    s = s.replace("\\$", "").replace("$", "")
    s = _MIXED_FACTOR_RE.sub(_mixed_factor, s)
    s = _IMAG_RE.sub("i", s)
    s = _EULER_RE.sub("e", s)  # math-verify cannot read \mathrm{e}: 1 - \frac{1}{\mathrm{e}} was read as 1
    s = re.sub(r"\\langle(?![A-Za-z])", "(", re.sub(r"\\rangle(?![A-Za-z])", ")", s))  # a vector <1,2,3> as a tuple
    if _TRIG_RE.search(s) and "circ" in s:  # angles in degrees: math-verify drops the degree sign (sin 90° = sin 90)
        s = _DEGREES_RE.sub(r"(\1\\cdot\\frac{\\pi}{180})", s)
    for pat, rep in _REL_SUBS:
        s = pat.sub(rep, s)
    return re.sub(r"\s+", " ", s).strip()


def _split_top(s: str, sep: str = ",") -> list[str]:
    """``s`` split at ``sep`` outside brackets/braces (``\\{``, ``\\}`` count as brackets too)."""
    out, depth, cur, i = [], 0, [], 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s) and s[i + 1] in "{}":
            depth += 1 if s[i + 1] == "{" else -1
            cur.append(s[i:i + 2])
            i += 2
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        if c == sep and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(c)
        i += 1
    out.append("".join(cur).strip())
    return out


def _balanced(s: str) -> bool:
    depth = 0
    for c in s:
        depth += 1 if c in "([{" else -1 if c in ")]}" else 0
        if depth < 0:
            return False
    return depth == 0


# ---------------------------------------------------------------- structured readings
_MATRIX_RE = re.compile(
    r"\\begin\{(pmatrix|bmatrix|Bmatrix|matrix|smallmatrix|array)\}\s*(?:\{[^{}]*\})?(.*?)\\end\{\1\}", re.DOTALL
)


def _matrix(s: str) -> list[list[str]] | None:
    """Cells of a matrix answer (``pmatrix``, ``bmatrix``, ``array`` ...) when the whole answer is one matrix."""
    m = _MATRIX_RE.search(s)
    if m is None:
        return None
    outside = (s[:m.start()] + s[m.end():]).strip()
    if re.sub(r"[\s()\[\]]", "", outside):
        return None
    rows = [r for r in re.split(r"\\\\(?:\[[^\]]*\])?", m.group(2)) if r.strip() and r.strip() != "\\hline"]
    cells = [[c.strip() for c in r.replace("\\hline", "").split("&")] for r in rows]
    if not cells or len(cells) * max(len(r) for r in cells) > MAX_ELEMENTS:
        return None
    return cells


_INTERVAL_RE = re.compile(r"([(\[])(.+),(.+)([)\]])")


def _intervals(s: str) -> list[tuple[str, str, str, str]] | None:
    """An interval or a union of intervals as (open, start, end, close) parts; None when ``s`` is not one.

    ``x \\in [0, \\infty)`` and ``\\left(1, 2\\right]`` work; infinity may be ``\\infty``, ``∞`` or ``inf``,
    the union ``\\cup``, ``∪`` or ``U``."""
    t = re.sub(r"^[A-Za-z]\s*\\in\s*", "", s.strip())
    t = _INF_RE.sub("oo", t)
    t = _UNION_RE.sub("|", t)
    parts = [p.strip() for p in t.split("|")]
    if len(parts) > MAX_ELEMENTS:
        return None
    out = []
    for p in parts:
        m = _INTERVAL_RE.fullmatch(p)
        if m is None or not _balanced(m.group(2) + m.group(3)):
            return None
        inner = _split_top(p[1:-1])
        if len(inner) != 2 or not all(inner):
            return None
        a, b = (x.replace("+oo", "oo") for x in inner)
        out.append((m.group(1), a, b, m.group(4)))
    return out


_REL_SPLIT_RE = re.compile(r"(\\geq|\\leq|\\neq|<|>|=)")
_FLIP = {"<": ">", ">": "<", "\\leq": "\\geq", "\\geq": "\\leq", "=": "=", "\\neq": "\\neq"}


def _relation(s: str) -> list[str] | None:
    """``[side, op, side, op, ...]`` of a (chained) relation in canonical form, or None."""
    parts = [p.strip() for p in _REL_SPLIT_RE.split(s)]
    if len(parts) < 3 or len(parts) > 2 * MAX_ELEMENTS or not all(parts[::2]):
        return None
    ops = parts[1::2]
    if all(o == "=" for o in ops):
        return None  # equations are math-verify's (and ``x = 5`` is read as 5 elsewhere)
    return parts


def _relation_interval(parts: list[str]) -> list[tuple[str, str, str, str]] | None:
    """A one-variable inequality as an interval: ``x \\leq 3`` -> ``(-oo, 3]``, ``-1 < x \\leq 2`` -> ``(-1, 2]``."""
    var = re.compile(r"[A-Za-z]")
    low = {"<": "(", "\\leq": "["}
    high = {"<": ")", "\\leq": "]"}
    for cand in (parts, _flip(parts)):
        if len(cand) == 3 and var.fullmatch(cand[0]) and cand[1] in ("<", "\\leq", ">", "\\geq"):
            op, a = cand[1], cand[2]
            if op in high:
                return [("(", "-oo", a, high[op])]
            return [(low[_FLIP[op]], a, "oo", ")")]
        if len(cand) == 5 and var.fullmatch(cand[2]) and cand[1] in low and cand[3] in high:
            return [(low[cand[1]], cand[0], cand[4], high[cand[3]])]
    return None


def _flip(parts: list[str]) -> list[str]:
    return [p if i % 2 == 0 else _FLIP[p] for i, p in enumerate(reversed(parts))]


def _elements(s: str) -> tuple[str, list[str]] | None:
    """(kind, elements) of a list/set/tuple answer: ``1, 2`` (list), ``\\{1,2\\}`` (set), ``(1,2,3)`` (tuple)."""
    t = s.strip()
    kind = "list"
    if t.startswith("\\{") and t.endswith("\\}"):
        t, kind = t[2:-2], "set"
    elif t.startswith("(") and t.endswith(")") and _balanced(t[1:-1]):
        t, kind = t[1:-1], "tuple"
    parts = _split_top(t)
    if kind != "tuple":  # "\\pm 8, \\pm 1" is 8, -8, 1, -1; "4 \\pm i" is 4 + i, 4 - i
        parts = [q for part in parts for q in _plus_minus(part)]
    if len(parts) < 2 or len(parts) > MAX_ELEMENTS or not all(parts):
        return None
    return kind, parts


_PM_RE = re.compile(r"\\pm(?![A-Za-z])|±|\\mp(?![A-Za-z])|∓")


def _plus_minus(part: str) -> list[str]:
    """An element with one ``\\pm`` (or ``\\mp``) as its two values, the ``+`` one first; else the element."""
    found = _PM_RE.findall(part)
    if len(found) != 1:
        return [part]
    first, second = ("-", "+") if found[0] in ("\\mp", "∓") else ("+", "-")
    return [_PM_RE.sub(first, part).strip(), _PM_RE.sub(second, part).strip()]


# ---------------------------------------------------------------- decimals against exact values
_DECIMAL_RE = re.compile(r"-?\d+\.\d+")


def _decimal(ans: str):
    """(Decimal value, decimals) of an answer that is a decimal literal (units, ``\\approx``, ``x =`` dropped)."""
    from decimal import Decimal

    s = decimal_comma(_canon(ans))
    s = re.sub(r"^(?:[A-Za-z]\s*=|\\approx|≈)\s*", "", s)
    s = _UNIT_TAIL_RE.sub("", s).strip() if not _DECIMAL_RE.fullmatch(s) else s
    if not _DECIMAL_RE.fullmatch(s):
        return None
    return Decimal(s), len(s.split(".")[1])


def _exact_value(ans: str, float_rounding: int):
    """The value of an exact irrational answer (``40\\pi``, ``\\sqrt{2}``, ``e^2``) as a Decimal, else None."""
    from decimal import Decimal

    num = parse_number(ans)
    if num is not None:
        v, pct = num
        if pct or isinstance(v, Fraction):
            return None  # rationals are compared exactly
        return Decimal(repr(v))
    parsed = _mv_parse(f"${_canon(ans)}$")
    if not parsed:
        return None
    import sympy

    expr = parsed[0]
    try:
        if isinstance(expr, str) or not isinstance(expr, sympy.Expr) or not expr.is_number or expr.is_rational:
            return None
        if _too_big(expr):
            return None
        val = sympy.N(expr, 30)
        if not val.is_real:
            return None
        return Decimal(str(val))
    except Exception:  # noqa: BLE001 - an expression sympy cannot evaluate is not a number
        return None


def decimal_matches_exact(exact, dec, decimals: int) -> bool:
    """Whether a decimal with ``decimals`` places is the exact value rounded (half up) or truncated to
    that many places: ``125.66``, ``125.663`` and ``125.664`` all state 40π = 125.66370..."""
    from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal

    q = Decimal(1).scaleb(-decimals)
    digits = dec.copy_abs().as_tuple().digits
    sig = len("".join(map(str, digits)).lstrip("0"))
    if decimals < 1 or sig < MIN_APPROX_SIG_DIGITS:
        return False
    return dec in (exact.quantize(q, rounding=ROUND_HALF_UP), exact.quantize(q, rounding=ROUND_DOWN))


def _approx_equal(a: str, b: str, float_rounding: int) -> bool:
    for x, y in ((a, b), (b, a)):
        d = _decimal(y)
        if d is None or _decimal(x) is not None:
            continue
        exact = _exact_value(x, float_rounding)
        if exact is not None and decimal_matches_exact(exact, d[0], d[1]):
            return True
    return False


# ---------------------------------------------------------------- math-verify behind guards
MAX_VALUE_BITS = 100_000  # a number math-verify may evaluate: at most ~30,000 digits (2^{2010}, 3^{1001})
MAX_SYMBOLIC_EXP = 1000  # a power of an expression with variables past this may be expanded: compared as written
_HUGE = float("inf")


def _log2_bound(expr) -> float:
    """An upper bound on ``log2 |value|`` of what evaluating ``expr`` may build (inf past ~2^30 bits): numbers by
    their size, sums by their largest term, products by the sum, powers by exponent x base, factorials by
    ``n log2 n``. Symbols count as small; a symbolic exponent adds nothing (nothing numeric is built)."""
    import sympy

    if isinstance(expr, sympy.Integer):
        return float(max(expr.p.bit_length(), 1))
    if isinstance(expr, sympy.Rational):
        return float(max(expr.p.bit_length(), expr.q.bit_length(), 1))
    if isinstance(expr, sympy.Float):
        return float(max(abs(int(expr._mpf_[2])) + int(expr._mpf_[3]), 1)) if expr._mpf_[1] else 1.0
    if isinstance(expr, sympy.Pow | sympy.exp):
        base, e = (sympy.E, expr.args[0]) if isinstance(expr, sympy.exp) else expr.args
        b = _log2_bound(base)
        if not e.is_number:
            return b + _log2_bound(e)
        eb = _log2_bound(e)
        if eb > 30:
            return _HUGE
        return max(b, 1.0) * max(2.0 ** eb, 1.0)
    if isinstance(expr, sympy.factorial | sympy.factorial2 | sympy.binomial | sympy.gamma | sympy.RisingFactorial
                  | sympy.FallingFactorial):
        nb = max(_log2_bound(a) for a in expr.args)
        if nb > 30:
            return _HUGE
        n = 2.0 ** nb
        return n * max(math.log2(n), 1.0)
    args = [a for a in getattr(expr, "args", ()) if isinstance(a, sympy.Basic)]
    if not args:
        return 2.0  # a symbol, pi, e, i
    bounds = [_log2_bound(a) for a in args]
    if isinstance(expr, sympy.Mul):
        return sum(bounds)
    return max(bounds) + math.log2(len(bounds)) + 1.0


def _too_big(expr) -> bool:
    """True when evaluating or simplifying a sympy expression could hang: a number past :data:`MAX_VALUE_BITS`
    bits would be built (``2^{10^{10}}``, ``100000!``), or an expression with variables is raised past
    :data:`MAX_SYMBOLIC_EXP` (``(x+1)^{3000}`` expands to 3001 terms). Such expressions are compared as
    written only (:func:`_written_equal`)."""
    import sympy

    try:
        if _log2_bound(expr) > MAX_VALUE_BITS:
            return True
        for node in sympy.preorder_traversal(expr):
            if isinstance(node, sympy.Pow) and not node.base.is_number:
                e = node.exp
                if not e.is_number or _log2_bound(e) > 30 or abs(float(e)) > MAX_SYMBOLIC_EXP:
                    return True
            elif isinstance(node, sympy.factorial | sympy.factorial2 | sympy.binomial | sympy.gamma):
                if not node.args[0].is_number:
                    return True
    except Exception:  # noqa: BLE001 - a tree we cannot inspect is not handed on
        return True
    return False


def _written_key(expr, budget: list[int]) -> str:
    """A key of an expression as written, with the terms of sums and the factors of commutative products in
    a fixed order (``1+x^{2010}`` and ``x^{2010}+1`` get one key); nothing is evaluated. ``budget`` bounds the
    nodes visited (past it, ValueError)."""
    import sympy

    budget[0] -= 1
    if budget[0] < 0:
        raise ValueError("expression too large to compare as written")
    args = [a for a in getattr(expr, "args", ()) if isinstance(a, sympy.Basic)]
    if not args:
        return f"{type(expr).__name__}:{expr}"
    keys = [_written_key(a, budget) for a in args]
    if isinstance(expr, sympy.Add) or (isinstance(expr, sympy.Mul) and expr.is_commutative):
        keys.sort()
    return f"{type(expr).__name__}(" + ",".join(keys) + ")"


def _written_equal(g: tuple, p: tuple) -> bool:
    """Whether some parsed gold and pred expression are the same as written, up to the order of terms and
    factors (for expressions too big to evaluate: :func:`_too_big`)."""
    import sympy

    try:
        gk = {_written_key(x, [20_000]) for x in g if isinstance(x, sympy.Basic)}
        return any(_written_key(y, [20_000]) in gk for y in p if isinstance(y, sympy.Basic))
    except (ValueError, RecursionError):
        return False


def _timeout() -> int | None:
    # math-verify's timeouts use SIGALRM, which works in the main thread only; elsewhere the size guards bound it
    return MATH_VERIFY_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


@lru_cache(maxsize=1024)
def _mv_read(text: str) -> tuple[tuple | None, bool]:
    """math-verify's parse of ``text`` (cached; a gold is parsed once), None when empty, failed or longer than
    :data:`MAX_MV_TEXT_CHARS`; and whether it holds an expression too big to evaluate (:func:`_too_big`)."""
    if len(text) > MAX_MV_TEXT_CHARS + 4:
        return None, False
    from math_verify import parse

    try:
        out = parse(text, parsing_timeout=_timeout())
    except Exception:  # noqa: BLE001 - math-verify failures are "cannot judge", not crashes
        return None, False
    if not out:
        return None, False
    return tuple(out), any(_too_big(x) for x in out if not isinstance(x, str))


def _mv_parse(text: str) -> tuple | None:
    """math-verify's parse of ``text``, None when empty, failed or too big to evaluate."""
    out, big = _mv_read(text)
    return None if big else out


def _mv_equal(gold_text: str, pred_text: str, float_rounding: int) -> bool | None:
    """math-verify's verdict on two texts as it parses them; expressions too big to evaluate are compared as
    written (:func:`_written_equal`): equal or None."""
    (g, g_big), (p, p_big) = _mv_read(gold_text), _mv_read(pred_text)
    if not g or not p:
        return None
    if g_big or p_big:
        return True if _written_equal(g, p) else None
    return _mv_verify(g, p, float_rounding)


def _mv_verify(g: tuple | None, p: tuple | None, float_rounding: int) -> bool | None:
    if not g or not p:
        return None
    from math_verify import verify

    try:
        return bool(verify(list(g), list(p), float_rounding=float_rounding, timeout_seconds=_timeout()))
    except Exception:  # noqa: BLE001
        return None


def math_verify_equal(gold: str, pred: str, *, float_rounding: int = FLOAT_ROUNDING) -> bool | None:
    """math-verify's verdict on two extracted answers (gold first); None when it cannot judge.

    Both are wrapped in ``$...$`` after :func:`_canon` (so ``\\mathrm{i}`` is the imaginary unit, not a
    text dropped from ``3+4\\mathrm{i}``, and ``1,22`` is a decimal, not the set {1, 22})."""
    if len(gold) > MAX_ANSWER_CHARS or len(pred) > MAX_ANSWER_CHARS:
        return None
    g, p = _canon(gold), _canon(pred)
    if _primes(g) != _primes(p):
        return None  # math-verify drops a prime: f' is not f
    if parse_number(p) is not None:  # a single number on the other side: "1,5" is one and a half, not {1, 5}
        g = decimal_comma(g)
    if parse_number(g) is not None:
        p = decimal_comma(p)
    return _mv_equal(f"${g}$", f"${p}$", float_rounding)


def _raw_form(text: str) -> str:
    t = text.strip()
    return t if len(t) <= MAX_MV_TEXT_CHARS else t[-MAX_MV_TEXT_CHARS:]


def _whole_read(parsed: tuple | None, answer: str) -> bool:
    """Whether math-verify's raw parse of a bare answer read all of it (not just its last number)."""
    if not parsed or len(parsed) < 2 or not isinstance(parsed[-1], str):
        return False
    a = re.sub(r"[\s,{}$]|\\[,;!: ]|\\left|\\right", "", normalize_chars(parsed[-1]))
    b = re.sub(r"[\s,{}$]|\\[,;!: ]|\\left|\\right", "", normalize_chars(_strip_math(answer)))
    return a == b


# ---------------------------------------------------------------- the comparison layer
_UNITS_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen".split())}
_TENS_WORDS = {w: 10 * i for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), 2)}
_NUMBER_WORDS_RE = re.compile(r"(?i)\s*(?:\\(?:text|textbf|mathrm|mbox)\s*\{\s*)?(-?\s*[a-z][a-z \t-]{1,80}?)\s*\}?\s*\.?\s*")


def word_number(ans: str) -> int | None:
    """An answer written as a cardinal in words, up to the millions (``six``, ``\\text{twelve}``, ``Twenty-one``,
    ``two hundred and five``); None for anything else (``a dozen``, ``first``, a sentence)."""
    m = _NUMBER_WORDS_RE.fullmatch(ans)
    if m is None:
        return None
    words = m.group(1).lower().replace("-", " ").split()
    sign = -1 if words and words[0] == "minus" else 1
    words = [w for w in words[1 if sign < 0 else 0:] if w != "and"]
    total = current = 0
    last = None  # what the previous word was: a unit 1-9, a teen 10-19, tens, "hundred" or a scale word
    for w in words:
        v = _UNITS_WORDS.get(w)
        if v is not None and v < 10 and last in (None, "tens", "hundred", "scale") and (v or last is None):
            current, last = current + v, "unit"
        elif v is not None and v >= 10 and last in (None, "hundred", "scale"):
            current, last = current + v, "teen"
        elif w in _TENS_WORDS and last in (None, "hundred", "scale"):
            current, last = current + _TENS_WORDS[w], "tens"
        elif w == "hundred" and last == "unit" and current < 10:
            current, last = current * 100, "hundred"
        elif w in ("thousand", "million") and last in ("unit", "teen", "tens", "hundred"):
            total, current, last = total + current * (1000 if w == "thousand" else 1_000_000), 0, "scale"
        else:
            return None
    return sign * (total + current) if last is not None else None


def _read_number(ans: str) -> tuple[Value, bool] | None:
    s = _strip_math(ans)
    num = parse_number(decimal_comma(s))
    if num is None and re.search(r"[a-z]{3}", s, re.IGNORECASE):
        w = word_number(s)
        if w is not None:
            return Fraction(w), False
    return num


def _scalar_equal(a: str, b: str, float_rounding: int, depth: int = 0) -> bool:
    """Equality of two single answers: string form, numbers, decimal-vs-exact, structure, math-verify."""
    if normalize_answer(a) == normalize_answer(b):
        return True
    an, bn = _read_number(a), _read_number(b)
    if an is not None and bn is not None:
        if numbers_equal(an, bn):
            return True
        if not (an[1] or bn[1]) and _approx_equal(a, b, float_rounding):
            return True
        return bool(math_verify_equal(a, b, float_rounding=float_rounding))
    return _structured_equal(a, b, float_rounding, depth)


def _all_match(xs: list[str], ys: list[str], ordered: bool, float_rounding: int, depth: int) -> bool:
    if len(xs) != len(ys):
        return False
    if ordered:
        return all(_scalar_equal(x, y, float_rounding, depth + 1) for x, y in zip(xs, ys, strict=True))
    left = list(ys)
    for x in xs:
        hit = next((j for j, y in enumerate(left) if _scalar_equal(x, y, float_rounding, depth + 1)), None)
        if hit is None:
            return False
        left.pop(hit)
    return True


_ASSIGN_RE = re.compile(r"([A-Za-z](?:_\{?\w{1,3}\}?)?)\s*=\s*(.+)", re.DOTALL)


def _assignments(parts: list[str]) -> list[tuple[str, str]] | None:
    """``[("x", "2"), ("y", "3")]`` for the list ``x=2, y=3`` (distinct one-letter variables, optionally
    subscripted), else None."""
    out = [m.groups() if (m := _ASSIGN_RE.fullmatch(p.strip())) else None for p in parts]
    if any(o is None for o in out) or len({v for v, _ in out}) != len(out):
        return None
    return [(v, val.strip()) for v, val in out]


def _tuple_and_other(ea: tuple[str, list[str]], eb: tuple[str, list[str]]) -> tuple[list[str], list[str]] | None:
    """(the tuple's elements, the other side's) when exactly one side is a tuple, else None."""
    if (ea[0] == "tuple") == (eb[0] == "tuple"):
        return None
    return (ea[1], eb[1]) if ea[0] == "tuple" else (eb[1], ea[1])


def _assignments_tuple_equal(vals: list[str], other: list[str], float_rounding: int, depth: int) -> bool:
    """A tuple's elements against a list of assignments (``(2,3)`` and ``x=2, y=3``, either side gold): the
    values in the order written, or in the variables' alphabetical order (``y=3, x=2`` is the point (2, 3))."""
    assigned = _assignments(other)
    if assigned is None or _assignments(vals) is not None or len(assigned) != len(vals):
        return False
    orders = [[v for _, v in assigned], [v for _, v in sorted(assigned)]]
    return any(_all_match(vals, order, True, float_rounding, depth) for order in orders)


def _point_mismatch(g: str, p: str, float_rounding: int) -> bool:
    """A tuple against a list of equations ``v = ...``, both short, that are not the same point."""
    if len(g) > MAX_ANSWER_CHARS or len(p) > MAX_ANSWER_CHARS or "=" not in g + p:
        return False
    ea, eb = _elements(_canon(g)), _elements(_canon(p))
    pair = _tuple_and_other(ea, eb) if ea is not None and eb is not None else None
    if pair is None or not all(_ASSIGN_RE.fullmatch(x.strip()) for x in pair[1]):
        return False
    return not _assignments_tuple_equal(*pair, float_rounding, 0)


def _structured_equal(a: str, b: str, float_rounding: int, depth: int = 0) -> bool:
    """Matrices, intervals and unions, relations, lists/sets/tuples, decimals against exact values, then
    math-verify on the canonical forms. Only ``True`` is a verdict: a ``False`` lets others judge."""
    if depth > 3 or len(a) > MAX_ANSWER_CHARS or len(b) > MAX_ANSWER_CHARS:
        return False
    ca, cb = _canon(a), _canon(b)
    if normalize_answer(ca) == normalize_answer(cb):
        return True
    ma, mb = _matrix(ca), _matrix(cb)
    if ma is not None or mb is not None:
        if ma is None or mb is None:  # one side is no matrix we read (a unit after it, another notation)
            return bool(math_verify_equal(ca, cb, float_rounding=float_rounding))
        if len(ma) != len(mb) or any(len(x) != len(y) for x, y in zip(ma, mb, strict=True)):
            return False
        return all(_scalar_equal(x, y, float_rounding, depth + 1)
                   for rx, ry in zip(ma, mb, strict=True) for x, y in zip(rx, ry, strict=True))
    ia, ib = _intervals(ca), _intervals(cb)
    ra, rb = _relation(ca), _relation(cb)
    if ia is not None and rb is not None:
        ib = _relation_interval(rb)
    elif ib is not None and ra is not None:
        ia = _relation_interval(ra)
    if ia is not None and ib is not None:
        if len(ia) != len(ib):
            return False
        left = list(ib)
        for x in ia:
            hit = next((j for j, y in enumerate(left) if x[0] == y[0] and x[3] == y[3]
                        and _scalar_equal(x[1], y[1], float_rounding, depth + 1)
                        and _scalar_equal(x[2], y[2], float_rounding, depth + 1)), None)
            if hit is None:
                return False
            left.pop(hit)
        return True
    if ra is not None or rb is not None:
        if ra is None or rb is None or len(ra) != len(rb):
            return bool(math_verify_equal(ca, cb, float_rounding=float_rounding))
        for cand in (rb, _flip(rb)):
            if cand[1::2] == ra[1::2] and all(_scalar_equal(x, y, float_rounding, depth + 1)
                                              for x, y in zip(ra[::2], cand[::2], strict=True)):
                return True
        return False
    ea, eb = _elements(ca), _elements(cb)
    if ea is not None and eb is not None:
        (ka, xa), (_, xb) = ea, eb
        pair = _tuple_and_other(ea, eb)
        if pair is not None:
            if _assignments(pair[1]) is not None:
                return _assignments_tuple_equal(*pair, float_rounding, depth)
            # a tuple against a bare list ("(1, 2)" and "1,2"): the same values in the same order, as math-verify
            # reads it; against a set, math-verify's reading
            if "set" in (ka, eb[0]):
                return bool(math_verify_equal(ca, cb, float_rounding=float_rounding))
            return _all_match(pair[0], pair[1], True, float_rounding, depth)
        if _all_match(xa, xb, ka == "tuple", float_rounding, depth):
            return True
        return False
    if _approx_equal(ca, cb, float_rounding) or _imaginary_equal(ca, cb):
        return True
    return bool(math_verify_equal(ca, cb, float_rounding=float_rounding)) or _sampled_equal(ca, cb)


SAMPLE_POINTS = 6  # random points at which two expressions in the same variables must agree


def _sampled_equal(a: str, b: str) -> bool:
    """Two expressions in the same one to four variables that agree at :data:`SAMPLE_POINTS` random points in
    [0.5, 2.5] (relative 1e-9) and wherever both are real at as many points in [-2.5, -0.5]; a point where one
    side is real and the other is not, or where they differ, decides "unequal". math-verify's simplification
    misses identities such as ``\\frac{v_0}{r_0}(1+r/r_0)^{-3/2}`` = ``v_0 (r_0/(r+r_0))^{0.5}/(r+r_0)``; points
    on both signs keep ``\\sqrt{x^2}`` and ``|x|`` apart from ``x``. Values come from ``evalf`` on the parsed
    trees (nothing is executed); the points are seeded from the texts, so a verdict is reproducible."""
    import random

    import sympy

    if not re.search(r"[A-Za-z]", a + b):
        return False
    pair = _two_expressions(a, b)
    if pair is None or pair[0].has(sympy.Symbol("i")):
        return False
    ea, eb = pair
    calculus = (sympy.Sum, sympy.Product, sympy.Integral, sympy.Derivative, sympy.Limit)
    if ea.has(*calculus) or eb.has(*calculus):
        return False  # a sum's bound or an integral's variable taken at a random real is no value
    syms = ea.free_symbols
    if not syms or syms != eb.free_symbols or len(syms) > 4:
        return False
    order = sorted(syms, key=lambda x: x.name)
    rng = random.Random(zlib.crc32((a + "\x00" + b).encode("utf-8", "replace")))
    agreed = 0
    for k in range(2 * SAMPLE_POINTS):
        sign = 1 if k < SAMPLE_POINTS else -1
        point = {x: sympy.Float(sign * rng.uniform(0.5, 2.5), 30) for x in order}
        try:
            va, vb = complex(ea.evalf(30, subs=point)), complex(eb.evalf(30, subs=point))
        except (TypeError, ValueError, ArithmeticError):
            return False
        if not all(math.isfinite(z.real) and math.isfinite(z.imag) for z in (va, vb)):
            return False
        real_a, real_b = abs(va.imag) <= 1e-12 * max(1.0, abs(va)), abs(vb.imag) <= 1e-12 * max(1.0, abs(vb))
        if sign < 0 and not real_a and not real_b:
            continue  # off both expressions' real domain
        if real_a != real_b or abs(va - vb) > 1e-9 * max(1.0, abs(va), abs(vb)):
            return False
        agreed += 1
    return agreed >= SAMPLE_POINTS


_LONE_I_RE = re.compile(r"(?<![A-Za-z\\])i(?![A-Za-z])")
_BIG_EXP_RE = re.compile(r"\^\s*\{?\s*[-+]?\s*\d{4,}")


def _two_expressions(a: str, b: str):
    """math-verify's parse of two answers as sympy expressions (not sets, relations or text), else None; None
    also when a power has a 4-digit exponent, whose parse alone may take math-verify's whole timeout."""
    import sympy

    if _BIG_EXP_RE.search(a + b):
        return None
    pa, pb = _mv_parse(f"${a}$"), _mv_parse(f"${b}$")
    if not pa or not pb or not (isinstance(pa[0], sympy.Expr) and isinstance(pb[0], sympy.Expr)):
        return None
    return pa[0], pb[0]


def _imaginary_equal(a: str, b: str) -> bool:
    """Two expressions whose only variable is ``i``, equal as complex numbers (``i(2-i)`` is ``1+2i``,
    ``10 - 10i^2`` is 20). math-verify reads ``i`` as a plain symbol, so it judges these apart."""
    if not _LONE_I_RE.search(a + b):
        return False
    pair = _two_expressions(a, b)
    if pair is None:
        return False
    import sympy

    ea, eb = pair
    syms = ea.free_symbols | eb.free_symbols
    if not syms or any(x.name != "i" for x in syms):
        return False
    sub = {x: sympy.I for x in syms}
    try:
        va, vb = complex(sympy.N(ea.subs(sub), 30)), complex(sympy.N(eb.subs(sub), 30))
    except (TypeError, ValueError, ArithmeticError):
        return False
    return abs(va - vb) <= 1e-9 * max(1.0, abs(vb))


def _box_set_equal(gold_answer: str, pred_text: str, float_rounding: int) -> bool:
    """A list/set gold (``1, 2``, ``\\{1,2\\}``, ``(1,2), (3,4)``) against several boxed answers of ``pred_text``
    (``\\boxed{1}`` and ``\\boxed{2}``), order-free; a repeated box counts once."""
    els = _elements(_canon(gold_answer))
    if els is None or els[0] == "tuple":
        return False
    boxes: list[str] = []
    seen: set[str] = set()
    for b in boxed_answers(pred_text):
        for part in _split_top(_canon(b)):
            key = normalize_answer(part)
            if part and key not in seen:
                seen.add(key)
                boxes.append(part)
    if len(boxes) < 2:
        return False
    return _all_match(els[1], boxes, False, float_rounding, 0)


def _last_number(text: str) -> str | None:
    nums = _numbers(text[-2000:])
    return nums[-1] if nums else None


_PRIME_RE = re.compile(r"(?<=[A-Za-z0-9)}])'+(?![A-Za-z])")


def _primes(s: str) -> int:
    """How many primes ``s`` has (``f'``, ``E''``; the apostrophe of "it's" is none)."""
    return sum(len(m.group(0)) for m in _PRIME_RE.finditer(s))


def _short(text: str) -> bool:
    t = text.strip()
    return "\n" not in t and len(t) <= 120


def _decided_unequal(gold: str, pred: str, g: str, p: str, bare: tuple[bool, bool], float_rounding: int) -> bool:
    """Whether the extracted answers are short ones that differ in a prime (``E`` vs ``E'``), or numbers that
    differ, read where math-verify's own reading of the texts is not to be trusted over them: plain literals (the pred's also its text's last number), or
    short one-line texts whose answers are exact numbers (``$2^{10}.$`` is 1024, not 2; ``The answer is
    4 4/9.`` is 40/9, not 4) that are not a decimal for an exact value and that math-verify also reads apart."""
    g_bare, p_bare = bare
    if _primes(g) != _primes(p) and len(g + p) <= 40 and "=" not in g + p:
        return True  # a prime is meaning (f' is not f), though math-verify's parse drops it
    if _point_mismatch(g, p, float_rounding):
        return True  # math-verify reads ``x=2, y=3`` as the set {2, 3}: it takes (3,2) and ``x=2, x=3`` too
    if g_bare and _PLAIN_NUM_RE.fullmatch(g.strip()) and _PLAIN_NUM_RE.fullmatch(p.strip()) and (
            p_bare or _last_number(pred) == p.strip()):
        return True
    if not (_short(gold) and _short(pred)) or "," in g + p or len(boxed_answers(pred)) > 1:
        return False  # a comma may be a list or a decimal comma; several boxes may be a list
    gn, pn = _read_number(g), _read_number(p)
    if gn is None or pn is None or gn[1] or pn[1] or numbers_equal(gn, pn):
        return False
    if not (isinstance(gn[0], Fraction) and isinstance(pn[0], Fraction)):
        return False
    return not _approx_equal(g, p, float_rounding) and not math_verify_equal(g, p, float_rounding=float_rounding)


_CHOICE_GOLD_RE = re.compile(r"\(?([A-J])\)?")
_CHOICE_PRED_RES = (
    re.compile(r"\(?([A-J])\)?(?:[.:)]\s.*|[.:)]?)", re.DOTALL),  # "C", "(C)", "C.", "C. x = 42"
    re.compile(r"\*\*\(?([A-J])\)?\*\*\.?"),  # "**C**"
    re.compile(r"[^()]{0,80}?\(([A-J])\)[.!]?"),  # "I think it's (D)."
)


def _choice_equal(gold_answer: str, pred_text: str) -> bool:
    """A multiple-choice letter gold (``C``, ``(C)``, ``\\text{C}``) against a pred that states one choice
    letter: ``C. x = 42``, ``(C)``, ``**C**``, ``I think it's (D).`` (a short text, one letter in parentheses)."""
    m = _CHOICE_GOLD_RE.fullmatch(normalize_answer(gold_answer).upper())
    t = _strip_math(pred_text.strip())
    w = _TEXT_WRAP_RE.fullmatch(t)  # \text{(D) a non-horizontal line}
    t = w.group(1).strip() if w else t
    if m is None or len(t) > 200:
        return False
    for pat in _CHOICE_PRED_RES:
        pm = pat.fullmatch(t)
        if pm is not None:
            return pm.group(1) == m.group(1)
    return False


_ZERO_DIV_RE = re.compile(r"/\s*0(?![\d.])")
_PLAIN_NUM_RE = re.compile(r"-?(?:[1-9]\d{0,2}(?:,\d{3})+|\d+)(?:\.\d{1,6})?")


def answers_equal(gold: str, pred: str, *, float_rounding: int = FLOAT_ROUNDING) -> bool:
    """Whether ``pred`` states the same final answer as ``gold``; both may be bare answers or full texts.

    Gold first (math-verify's reading of the gold decides what kind of object is compared). Equal when
    any of: the normalised comparison of the extracted answers (numbers exactly, decimals against
    exact irrationals at the decimal's stated precision, matrices, intervals, relations, lists and
    sets, several boxes against a list gold); math-verify on the extracted answers; math-verify on the
    texts (a full text as it is, a bare answer in ``$...$``); math-verify on the raw bare strings when it
    read each whole. ``float_rounding`` is math-verify's (decimal places for float comparisons).
    """
    if not isinstance(gold, str) or not isinstance(pred, str):
        return False
    gold, pred = after_thinking(gold)[-MAX_TEXT_CHARS:], after_thinking(pred)[-MAX_TEXT_CHARS:]
    g, p = extract_answer(gold), extract_answer(pred)
    if g is not None and p is not None:
        gn, pn = _read_number(g), _read_number(p)
        if gn is not None and pn is not None and numbers_equal(gn, pn):
            return True
    g_bare = g is not None and _strip_math(gold.strip()) == g
    p_bare = p is not None and _strip_math(pred.strip()) == p
    if g is not None and p is not None:
        if _decided_unequal(gold, pred, g, p, (g_bare, p_bare), float_rounding):
            return False
        if _scalar_equal(g, p, float_rounding) or _box_set_equal(g, pred, float_rounding) or _choice_equal(g, pred) or _choice_equal(g, p):
            return True
    if not (g_bare and p_bare):
        forms = [_raw_form(gold) if not g_bare else f"${_canon(g)}$",
                 _raw_form(pred) if not p_bare else f"${_canon(p)}$"]
        if _mv_equal(forms[0], forms[1], float_rounding):
            return True
    if g is not None and p is not None:
        rg, rp = _mv_parse(_raw_form(gold)), _mv_parse(_raw_form(pred))
        trusted = ((not g_bare or _whole_read(rg, g)) and (not p_bare or _whole_read(rp, p))
                   and not _ZERO_DIV_RE.search(g + " " + p))  # "4 4/0" is no value, though math-verify reads 4
        if trusted and (g_bare or p_bare) and _mv_verify(rg, rp, float_rounding):
            return True
    return False
