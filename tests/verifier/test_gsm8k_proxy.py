"""The GSM8K-style first-error proxy: errors carried forward to a wrong answer, the gold step, no code run."""

from __future__ import annotations

import random

from verifier.gsm8k_proxy import _value, corrupt
from verifier.steps import split_steps

Q = ("Betty needs $100 for a wallet. She has half of the money. Her parents give her $15 and her grandparents "
     "twice as much as her parents. How much more money does Betty need?")
REF = ("In the beginning, Betty has only 100 / 2 = $<<100/2=50>>50.\n"
       "Betty's grandparents gave her 15 * 2 = $<<15*2=30>>30.\n"
       "This means, Betty needs 100 - 50 - 30 - 15 = $<<100-50-30-15=5>>5 more.\n#### 5")


def test_value_reads_arithmetic_only():
    assert _value("100-50-30-15") == 5 and _value("(15/100)*80") == 12 and _value("0.2 x 50") == 10
    for hostile in ("__import__('os').system('true')", "2**10**10", "len('a')", "1/0", "a+1"):
        assert _value(hostile) is None


def test_slip_is_carried_to_the_final_answer():
    for seed in range(20):
        got = corrupt(Q, REF, "slip", random.Random(seed))
        if got is None:
            continue
        text, first, final = got
        assert "<<" not in text and final != "5" and text.endswith(f"#### {final}")
        steps = split_steps(text)
        assert steps[first] != split_steps(REF.replace("<<100/2=50>>", "").replace("<<15*2=30>>", "")
                                           .replace("<<100-50-30-15=5>>", ""))[first]
        # every step after the error is consistent with it: only the first error is wrong arithmetic
        if first == 0:
            v = steps[0].split("= $")[1].rstrip(".")
            assert f"100 - {v} - " in steps[2]


def test_operand_keeps_the_arithmetic_right():
    seen = 0
    for seed in range(30):
        got = corrupt(Q, REF, "operand", random.Random(seed))
        if got is None:
            continue
        text, first, final = got
        seen += 1
        line = split_steps(text)[first]
        lhs, rhs = line.split(" = $")
        expr = lhs.split()[-3:] if "-" not in lhs else lhs.split("needs ")[1].split()
        assert _value("".join(expr)) == _value(rhs.split()[0].rstrip(".")), line
    assert seen


def test_clean_has_no_error_and_no_annotations():
    text, first, final = corrupt(Q, REF, "clean", random.Random(0))
    assert first is None and final == "5" and "<<" not in text
