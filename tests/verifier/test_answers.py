"""Answer extraction and equivalence, table-driven (GSM8K and MATH styles)."""

from __future__ import annotations

import pytest

from verifier import answers_equal, extract_answer

EQUIVALENT = [
    ("72", "Natalia sold 48+24 = 72 clips.\n#### 72"),
    ("0.5", "The answer is 0.5."),
    ("\\frac12", "0.5"),
    ("\\frac{1}{2}", "So the probability is $\\boxed{\\frac12}$."),
    ("\\dfrac{3}{4}", "0.75"),
    ("1200", "The total is \\$1,200."),
    ("1,200", "#### 1200"),
    ("18", "18.00"),
    ("18", "She pays $18.00 in total. #### $18.00"),
    ("50", "The discount is 50%."),
    ("0.5", "50%"),
    ("-3", "Thus $x = \\boxed{-3}$."),
    ("18", "The answer is 18. I hope this helps!"),
    ("3", "First \\boxed{2}, but correcting the sign gives \\boxed{3}"),
    ("(1,2)", "The point is $\\boxed{(1, 2)}$."),
    ("[1,3)", "The solution set is \\boxed{[1,3)}"),
    ("\\frac{\\sqrt{3}}{2}", "\\boxed{\\frac{\\sqrt3}{2}}"),
    ("x^2+2x", "\\boxed{x^2 + 2x}"),
    ("\\text{(C)}", "\\boxed{\\text{(C)}}"),
    ("5", "\\boxed{x = 5}"),
    ("12", "\\boxed{\\boxed{12}}"),
    ("3", "\\fbox{3}"),
    ("90", "\\boxed{90^\\circ}"),
    ("10", "She earned $10."),
    ("18", "18 dollars"),
    ("18", "Answer: 18 apples"),
    ("١٢", "12"),
    ("\\frac{1}{3}", "\\boxed{\\dfrac{1}{3}}"),
    ("2\\sqrt{3}", "\\boxed{\\sqrt{12}}"),
    ("-0.25", "The slope is $-\\frac{1}{4}$.\n\n# Answer\n\n-\\frac14"),
]
DIFFERENT = [
    ("72", "#### 70"),
    ("2", "\\boxed{2} then finally \\boxed{3}"),
    ("(1,3)", "\\boxed{[1,3)}"),
    ("10", "\\boxed{10^{10^{10}}}"),
    ("5", "nan"),
    ("", ""),
    ("7", ""),
    ("1/3", "0.33"),
    ("1000", "100"),
    ("-3", "3"),
    ("(1,2)", "(2,1)"),
]


@pytest.mark.parametrize(("gold", "pred"), EQUIVALENT)
def test_equivalent(gold, pred):
    assert answers_equal(gold, pred), (gold, pred, extract_answer(gold), extract_answer(pred))


@pytest.mark.parametrize(("gold", "pred"), DIFFERENT)
def test_different(gold, pred):
    assert not answers_equal(gold, pred)


@pytest.mark.parametrize(("text", "answer"), [
    ("She sold 48+24 = 72 clips.\n#### 72", "72"),
    ("So we get \\boxed{\\frac{a+\\{b\\}}{c^{2}}} as required.", "\\frac{a+\\{b\\}}{c^{2}}"),
    ("The final answer is $\\frac{3}{4}$.", "\\frac{3}{4}"),
    ("answer: 42", "42"),
    ("# Answer\n\n2.5", "2.5"),
    ("So she has 5 + 3 = 8 apples left", "8"),
    ("\\boxed 7", "7"),
    ("no numbers here at all, sorry friend", None),
    ("", None),
])
def test_extract_answer(text, answer):
    assert extract_answer(text) == answer


def test_gold_first_argument_order_matters_for_sets():
    # a bare gold answer that is itself a full text: the extraction applies to both sides
    assert answers_equal("#### 1,234", "The answer is 1234")
    assert not answers_equal("#### 1,234", "The answer is 1.234")
