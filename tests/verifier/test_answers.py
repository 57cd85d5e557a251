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
    # answers in a display on the lines below the marker, as chat models write them
    ("Adding the two parts.\nThe answer is\n$$\n\\frac{1}{2}\n$$", "\\frac{1}{2}"),
    ("So the product is\n\\[\n\\begin{pmatrix} 0 & 3 \\\\ 0 & -1 \\end{pmatrix}\n\\]",
     "\\begin{pmatrix} 0 & 3 \\\\ 0 & -1 \\end{pmatrix}"),
    ("She earns 9 * 2 = 18 dollars.\n### Final Answer\n\n$$\n18\n$$", "18"),
    ("She earns 9 * 2 = 18 dollars.\n#### Final Answer\nJanet makes 18 dollars every day.", "18"),
    ("She earns 9 * 2 = 18 dollars.\n#### Answer: 18", "18"),
    ("Solving gives $x = 3$.\n\n**Answer**: $x = 3$", "x = 3"),
    # reasoning models: an <answer> tag, and only what follows the thinking
    ("Step 1: x = 10\nStep 2: Sum = 30\n\n<answer>54</answer>", "54"),
    ("<answer>\nThe total is 3 + 4 = 7 apples.\n</answer>", "7"),
    ("<think>2 + 2 = 4, or maybe \\boxed{5}</think>\nThe answer is 4.", "4"),
    # a model that goes on after its answer: a chat-end token, or a new question it writes itself
    ("She makes 9 * 2 = 18 dollars.\nThe answer is 18.<|im_end|>\n<|im_start|>user\nThe answer is 5", "18"),
    ("She makes 9 * 2 = 18 dollars.\nThe answer is 18.\n\nQuestion: A robe takes 2 bolts of blue fiber and half "
     "that much white fiber. How many bolts?\nAnswer: 2 + 1 = 3. The answer is 3.", "18"),
    ("Question: what is 2 + 2?\nAnswer: 4", "4"),
    # the marker inside a text group: not the group's closing brace or the display's closing delimiter
    ("So $3 \\times 6 = 18$ eggs.\n$$\\text{Answer: } 18$$", "18"),
    ("$$\\textbf{Answer:}\\ \\frac{1}{2}$$", "\\frac{1}{2}"),
    ("\\textbf{Final Answer:} 18", "18"),
    ("$\\text{Answer:}$ $18$", "18"),
    ("$\\text{Answer: }18$ and that is all.\nThanks", "18"),
    ("It costs $5 each. $\\text{Answer: } 7$", "7"),
    ("$\\text{Answer: } \\$18$", "\\$18"),
    # "answer" in a sentence that goes on about it: no "is", ":" or "=", and a clause follows, not an answer
    ("The answer is 11. Let's check our answer by substituting it back.", "11"),
    ("So there are 11 values. Let's verify our answer by listing all the values.", "11"),
    ("Yes, and that's our answer because we were asked for one squig.", None),
    ("I bet we can find the answer by completing the square.", None),
    ("Final answer 18", "18"),
    ("So the answer $5$.", "5"),
])
def test_extract_answer(text, answer):
    assert extract_answer(text) == answer


def test_gold_first_argument_order_matters_for_sets():
    # a bare gold answer that is itself a full text: the extraction applies to both sides
    assert answers_equal("#### 1,234", "The answer is 1234")
    assert not answers_equal("#### 1,234", "The answer is 1.234")


@pytest.mark.parametrize(("text", "reading"), [
    ("1,22", "1.22"), ("0,125", "0.125"), ("3,5", "3.5"), ("12,3456", "12.3456"), ("x = 1,5", "x = 1.5"),
    ("1,000", "1000"), ("12,500", "12500"), ("2{,}5", "2.5"), ("10{,}000", "10000"),
    ("1, 2", "1, 2"), ("1,2,3", "1,2,3"), ("(1,2)", "(1,2)"),
])
def test_decimal_comma_rule(text, reading):
    from verifier.answers import decimal_comma

    assert decimal_comma(text) == reading


def test_decimal_against_exact_value_uses_the_stated_precision():
    from decimal import Decimal

    from verifier.answers import decimal_matches_exact

    exact = Decimal("125.66370614359172")  # 40 pi
    assert decimal_matches_exact(exact, Decimal("125.664"), 3)  # rounded
    assert decimal_matches_exact(exact, Decimal("125.663"), 3)  # truncated
    assert not decimal_matches_exact(exact, Decimal("125.665"), 3)
    assert not decimal_matches_exact(Decimal("3.14159"), Decimal("3.1"), 1)  # too few significant digits
    assert answers_equal("40\\pi", "125.663") and not answers_equal("40\\pi", "125.7 + 1")


def test_mixed_numbers_and_extraction():
    from verifier.answers import parse_number

    assert parse_number("1\\frac12")[0] == parse_number("1.5")[0]
    assert parse_number("-2 \\frac{3}{4}")[0] == parse_number("-2.75")[0]
    assert parse_number("2\\frac{4}{3}")[0] == parse_number("\\frac{8}{3}")[0]  # improper: a product
    assert extract_answer("Dividing by 2.\nHence the solution is $x \\geq 5$.") == "x \\geq 5"
    assert extract_answer("So the domain is [0, \\infty).") == "[0, \\infty)"
    assert extract_answer("So $a + b = 3 + 4 = 7$.") == "7"


def test_float_rounding_is_configurable():
    assert answers_equal("\\frac{1}{3}", "0.333333")
    assert not answers_equal("\\frac{1}{3}", "0.333333", float_rounding=10)


def test_bounded_on_huge_and_hostile_inputs():
    import time

    t = time.perf_counter()
    assert not answers_equal("7", "(" * 5000 + "8" + ")" * 4999)
    assert not answers_equal("\\{" + ",".join(map(str, range(2000))) + "\\}", "\\boxed{1}" * 300)
    assert answers_equal("7", "x " * 30000 + "\n#### 7")
    assert not answers_equal("2^{2^{2^{2^{2}}}}", "9^{9^{9}}")
    assert time.perf_counter() - t < 20


def test_an_answer_before_a_long_run_on_is_read():
    """A model that answers and then runs on for 200,000 characters of new turns: the answer is found where
    the output ends, before the text is cut to its last MAX_TEXT_CHARS."""
    text = "She makes 9 * 2 = 18 dollars.\nThe answer is 18." + "\n\nQuestion: and then?" * 10000
    assert answers_equal("18", text) and not answers_equal("17", text)
