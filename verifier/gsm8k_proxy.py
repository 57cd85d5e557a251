"""GSM8K-style solutions with a known first erroneous step, for measuring first-error localisation.

Built from GSM8K *train* references (never test): the calculator annotations are stripped, so a solution
reads like a model's ("Natalia sold 48/2 = 24 clips in May."), and one error is made at a seeded step and
*carried forward*: every later calculation is redone with the wrong value, so the solution stays consistent
with itself and ends in a wrong final answer, the way a model's error does.

- ``slip``: the step's result is off (``48/2 = 25``): an arithmetic error.
- ``operand``: one operand of the step is replaced by another number of the question, or by a nearby
  number when the question has no other (``46/2 = 23``): the arithmetic holds, the quantity is wrong.
- ``clean``: the reference itself, stripped: no erroneous step.

The gold first erroneous step is the index of the changed step in :func:`verifier.steps.split_steps` of the
text. :func:`proxy_eval` scores them with and without the original (annotated) reference, ProcessBench-style.
Arithmetic is exact (:class:`fractions.Fraction`) over a tiny expression grammar read with :mod:`ast` (numbers,
``+ - * /``, parentheses): nothing is evaluated as code.
"""

from __future__ import annotations

import ast
import json
import random
import re
from fractions import Fraction
from pathlib import Path

from verifier.steps import split_steps

_ANN_RE = re.compile(r"<<([^<>=]*)=([^<>]*)>>")
_NUM_RE = re.compile(r"(?<![\w.,])\d+(?:\.\d+)?(?![\w]|\.\d)")
KINDS = ("slip", "operand", "clean")


def _value(expr: str) -> Fraction | None:
    """The exact value of an annotation expression (``48/2``, ``(15/100)*80``), or None."""
    try:
        tree = ast.parse(expr.replace("x", "*").replace("^", "**").strip(), mode="eval")
    except SyntaxError:
        return None
    return _walk(tree.body)


def _walk(n: ast.AST) -> Fraction | None:
    if isinstance(n, ast.Constant) and isinstance(n.value, int | float) and not isinstance(n.value, bool):
        return Fraction(str(n.value))
    if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub):
        v = _walk(n.operand)
        return None if v is None else -v
    if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Add | ast.Sub | ast.Mult | ast.Div):
        a, b = _walk(n.left), _walk(n.right)
        if a is None or b is None or (isinstance(n.op, ast.Div) and b == 0):
            return None
        return {ast.Add: a + b, ast.Sub: a - b, ast.Mult: a * b}.get(type(n.op), a / b if b else None)
    return None


def _fmt(v: Fraction) -> str | None:
    """``v`` as GSM8K writes it (``24``, ``0.2``, ``12.5``); None when it needs more than two decimals."""
    if v.denominator == 1:
        return str(v.numerator)
    if (v * 100).denominator != 1:
        return None
    return f"{float(v):.2f}".rstrip("0").rstrip(".")


def _swap(text: str, mapping: dict[str, str]) -> str:
    return _NUM_RE.sub(lambda m: mapping.get(m.group(0), m.group(0)), text)


def _lines(reference: str) -> tuple[list[str], str] | None:
    """The reference's body lines and its final answer (None without ``####``)."""
    if "####" not in reference:
        return None
    body, final = reference.rsplit("####", 1)
    return [x for x in body.strip().split("\n") if x.strip()], final.strip()


def corrupt(question: str, reference: str, kind: str, rng: random.Random) -> tuple[str, int | None, str] | None:
    """(solution text, gold first erroneous step, its final answer) of one ``kind``, or None when this
    reference has no step to change that way."""
    parsed = _lines(reference)
    if parsed is None:
        return None
    lines, final = parsed
    if kind == "clean":
        return _strip("\n".join(lines) + f"\n#### {final}"), None, final
    anns = [(i, m) for i, line in enumerate(lines) for m in [_ANN_RE.search(line)] if m]
    if not anns or any(_value(m.group(1)) is None for _, m in anns):
        return None
    i, m = rng.choice(anns)
    new_line, old_res, new_res = _change(lines[i], m, kind, question, rng)
    if new_line is None:
        return None
    out, mapping = list(lines), {old_res: new_res}
    out[i] = new_line
    for j in range(i + 1, len(lines)):
        out[j], mapping = _carry(lines[j], mapping)
        if out[j] is None:
            return None
    new_final = mapping.get(final.replace(",", ""), final)
    if new_final == final:
        return None  # the error does not reach the answer: not the case this proxy is about
    text = _strip("\n".join(out) + f"\n#### {new_final}")
    first = _step_of(text, _strip(new_line))
    return (text, first, new_final) if first is not None else None


def _change(line: str, m: re.Match, kind: str, question: str, rng: random.Random):
    """The changed line, the old and the new result of its calculation (``None, ...`` when impossible)."""
    expr, res = m.group(1), m.group(2).replace(",", "")
    if kind == "slip":
        v = Fraction(res)
        new = _fmt(v + max(1, round(abs(v) * Fraction(rng.choice((1, 2, 3)), 10))) * rng.choice((1, -1)))
        if new is None or new.startswith("-") or new == res:
            return None, res, res
        return line[:m.start()] + _first_swapped(line[m.end():], res, new), res, new
    operands = _NUM_RE.findall(expr)
    if not operands:
        return None, res, res
    op = rng.choice(operands)
    others = [x for x in _NUM_RE.findall(question.replace(",", "")) if x != op]
    repl = rng.choice(others) if others else _fmt(Fraction(op) + rng.choice((1, 2, 3)))
    new_expr = re.sub(rf"(?<![\d.]){re.escape(op)}(?![\d.])", repl, expr, count=1)
    v = _value(new_expr)
    new = _fmt(v) if v is not None and v >= 0 else None
    if new is None or new == res:
        return None, res, res
    # the visible calculation just before the annotation shows the new operand, the result after it the new
    # result; the rest of the line stays
    head, tail = line[:m.start()], line[m.end():]
    hits = list(re.finditer(rf"(?<![\d.]){re.escape(op)}(?![\d.])", head))
    if hits:
        head = head[:hits[-1].start()] + repl + head[hits[-1].end():]
    return head + _first_swapped(tail, res, new), res, new


def _first_swapped(tail: str, res: str, new: str) -> str:
    """``tail`` (what follows a stripped annotation) with its leading result ``res`` written as ``new``."""
    m = _NUM_RE.search(tail)
    if m and m.start() <= 2 and m.group(0).replace(",", "") == res:
        return tail[:m.start()] + new + tail[m.end():]
    return tail


def _carry(line: str, mapping: dict[str, str]) -> tuple[str | None, dict[str, str]]:
    """A later line with the changed values put in and its own calculation redone."""
    m = _ANN_RE.search(line)
    if not m:
        return _swap(line, mapping), mapping
    expr, res = m.group(1), m.group(2).replace(",", "")
    new_expr = _swap(expr, mapping)
    if new_expr == expr:
        return line, mapping
    v = _value(new_expr)
    new = _fmt(v) if v is not None else None
    if new is None or new.startswith("-"):
        return None, mapping
    mapping = {**mapping, res: new}
    return _swap(line[:m.start()], mapping) + f"<<{new_expr}={new}>>" + _swap(line[m.end():], mapping), mapping


def _strip(text: str) -> str:
    return _ANN_RE.sub("", text)


def _step_of(text: str, line: str) -> int | None:
    steps = split_steps(text)
    target = line.strip()
    return next((k for k, s in enumerate(steps) if target and target in s), None)


def proxy_items(data_root: Path, n: int, seed: int) -> list[dict]:
    """Up to ``n`` seeded GSM8K train problems, each as one item per kind that applies."""
    rows = [json.loads(x) for x in (Path(data_root) / "gsm8k" / "train.jsonl").open(encoding="utf-8")]
    rng = random.Random(seed)
    items = []
    for r in rng.sample(rows, min(n, len(rows))):
        for kind in KINDS:
            got = corrupt(r["question"], r["answer"], kind, rng)
            if got is not None:
                text, first, _ = got
                items.append({"kind": kind, "question": r["question"], "solution": text, "first": first,
                              "gold": r["answer"].rsplit("####", 1)[1].strip(), "reference": r["answer"]})
    return items


def proxy_eval(data_root: Path, verifier, n: int, seed: int) -> dict:
    """First-error agreement (:func:`verifier.report.first_error_metrics`) on :func:`proxy_items`, per kind
    and overall, scored with and without the reference."""
    from verifier.report import first_error_metrics

    items = proxy_items(data_root, n, seed)
    out: dict = {"n_problems": n}
    for with_ref in (False, True):
        preds = [verifier.score(it["question"], it["solution"], it["gold"],
                                it["reference"] if with_ref else None).first_error_step for it in items]
        block = {"all": first_error_metrics(preds, [it["first"] for it in items])}
        for kind in ("slip", "operand"):
            idx = [k for k, it in enumerate(items) if it["kind"] in (kind, "clean")]
            block[kind] = first_error_metrics([preds[k] for k in idx], [items[k]["first"] for k in idx])
        out["with_reference" if with_ref else "without_reference"] = block
    return out


__all__ = ["KINDS", "corrupt", "proxy_eval", "proxy_items"]
