"""Splitting a solution text into reasoning steps.

Lines are steps; lines inside a display-math block (``\\[ ... \\]``, ``$$ ... $$``, ``\\begin{align}``) stay
with their block; "Step 3:" markers start a new step; a single long line is split into sentences
(not at decimal points or inside ``$...$``); ``<think>``/``</think>`` markers are dropped. Example::

    >>> split_steps("Natalia sold 48/2 = 24 clips in May.\\nShe sold 48+24 = 72 clips.\\n#### 72")
    ['Natalia sold 48/2 = 24 clips in May.', 'She sold 48+24 = 72 clips.', '#### 72']
"""

from __future__ import annotations

import re

MAX_STEPS = 400

_STEP_MARK_RE = re.compile(r"(?<!^)(?=\b(?:Step|STEP)\s*\d+\s*[:.)])")
_SENTENCE_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z#\\$])")
_OPEN_RE = re.compile(r"\\\[|\\begin\{(?:align|equation|aligned|gather|eqnarray|array)\*?\}|^\s*\$\$")
_CLOSE_RE = re.compile(r"\\\]|\\end\{(?:align|equation|aligned|gather|eqnarray|array)\*?\}|\$\$\s*$")


def _sentences(line: str) -> list[str]:
    """Sentence split that keeps ``$...$`` spans whole."""
    if len(line) < 160:
        return [line]
    if line.count("$") % 2:  # money signs, not math delimiters
        return [p.strip() for p in _SENTENCE_RE.split(line) if p.strip()]
    parts, buf, inside = [], "", False
    chunks = re.split(r"(\$)", line)
    for ch in chunks:
        if ch == "$":
            inside = not inside
            buf += ch
            continue
        if inside:
            buf += ch
            continue
        pieces = _SENTENCE_RE.split(ch)
        for j, p in enumerate(pieces):
            buf += p
            if j < len(pieces) - 1:
                parts.append(buf)
                buf = ""
    if buf:
        parts.append(buf)
    return [p.strip() for p in parts if p.strip()]


_DOLLAR_RE = re.compile(r"(?<![\\$])\$(?!\$)")
_THINK_TAG_RE = re.compile(r"(?i)</?think>")  # a reasoning model's thinking markers are no steps


def _join_open_spans(lines: list[str]) -> list[str]:
    """A line that leaves a ``$...$`` span open continues on the next line ("... is $2(12) - 2(2) = 24" /
    "- 4 = 20$"): join them, when the span holds LaTeX and closes within three lines (currency signs,
    "$5 and $3", are left alone)."""
    if len(lines) < 2 or "$" not in "".join(lines[:MAX_STEPS * 4]):
        return lines
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if len(_DOLLAR_RE.findall(line)) % 2 and "\\" in line:
            for k in range(i + 1, min(i + 4, len(lines))):
                joined = " ".join(lines[i:k + 1])
                if not len(_DOLLAR_RE.findall(joined)) % 2:
                    line, i = joined, k
                    break
        out.append(line)
        i += 1
    return out


def split_steps(text: str) -> list[str]:
    """Reasoning steps of a solution (empty list for empty text); at most ``MAX_STEPS`` steps."""
    if not isinstance(text, str) or not text.strip():
        return []
    lines = _join_open_spans(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
    steps: list[str] = []
    block: list[str] | None = None
    for raw in lines:
        line = _THINK_TAG_RE.sub("", raw).strip() if "think>" in raw else raw.strip()
        if block is not None:
            block.append(line)
            if _CLOSE_RE.search(line) or line == "$$":
                steps[-1] = (steps[-1] + "\n" + "\n".join(b for b in block if b)).strip()
                block = None
            continue
        if not line:
            continue
        opens = len(_OPEN_RE.findall(line))
        closes = len(_CLOSE_RE.findall(line))
        if line.startswith("$$") and line.endswith("$$") and len(line) > 4:
            closes = opens
        elif line == "$$":
            opens, closes = 1, 0
        is_display = bool(re.match(r"^(\\\[|\$\$|\\begin\{)", line))
        if is_display and steps:
            # a display equation belongs to the sentence that introduces it
            steps[-1] = steps[-1] + "\n" + line
        else:
            for part in _STEP_MARK_RE.split(line):
                steps.extend(_sentences(part.strip()) if part.strip() else [])
        if opens > closes:
            block = []
        if len(steps) >= MAX_STEPS:
            break
    if block:
        steps[-1] = (steps[-1] + "\n" + "\n".join(b for b in block if b)).strip()
    return [s for s in steps if s][:MAX_STEPS]
