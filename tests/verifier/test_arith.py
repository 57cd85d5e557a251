"""The safe evaluator and calculation extraction."""

from __future__ import annotations

from fractions import Fraction

import pytest

from verifier.arith import EvalError, evaluate, extract_calculations

CALCS = [  # (step text, [(ok, result)])
    ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.", [(True, 24), (True, 24)]),
    ("She has 16 - 3 - 4 = 9 eggs left.", [(True, 9)]),
    ("She has 16 - 3 - 4 = 8 eggs left.", [(False, 8)]),
    ("So $x = 3 \\cdot 4 = 12$.", [(True, 12)]),
    ("We get $\\frac{10}{2} = 5$ and $\\dfrac{3}{4}\\times 8 = 6$.", [(True, 5), (True, 6)]),
    ("Each friend pays 10/3 = 3.33 dollars.", [(True, Fraction(333, 100))]),
    ("Each friend pays 10/3 = 3.5 dollars.", [(False, Fraction(7, 2))]),
    ("She earns 0.2 x 50 = $10.", [(True, 10)]),
    ("Two bikes cost $1,200 * 2 = $2,400.", [(True, 2400)]),
    ("The tip is 20% of 50 = 10 dollars.", [(True, 10)]),
    ("He bought 48 clips + 24 clips = 72 clips.", [(True, 72)]),
    ("$\\sqrt{16} = 4$ and $2^{10} = 1024$", [(True, 4), (True, 1024)]),
    ("5 - 8 = -3", [(True, -3)]),
    ("8 x 1 1/2 = 12 rolls", [(True, 12)]),
    ("$5! = 120$ and $\\binom{5}{2} = 10$", [(True, 120), (True, 10)]),
    ("3 + 4 = 7 + 2 = 9", [(True, 9)]),  # running total: sloppy but not a wrong result
    ("half of 50 = 25", []),  # the left operand is only part of the expression
    ("the 4th turn = <<5+8+0=13>>13 meters", [(True, 13)]),
    ("2x + 3 = 7", []),
    ("10/3 ≈ 3.3", [(True, Fraction(33, 10))]),
    ("Then 0.2 * 100 = 20%", [(True, Fraction(1, 5))]),
    # an equality said in words, after a calculation and before a bare number
    ("20 minus 8 is 12 players.", [(True, 12)]),
    ("5 times 3 is 16, so she has 16 apples.", [(False, 16)]),
    ("She has 3 * 4 = 12, and 12 + 5 equals 18.", [(True, 12), (False, 18)]),
    ("The answer is 7.", []),  # no calculation before "is"
    # "is" before an expression; "$75=$" holds currency signs, so the prose chain is read beside the annotation
    ("the fraction 4/15 is 4/15*$75=$<<4/15*75=20>>20", [(True, 20), (True, 20)]),
    # currency signs, never math delimiters: a "$...$" span cannot end in an operator
    ("he uses $36/$3 = <<36/3=12>>12 gallons a week.", [(True, 12), (True, 12)]),
    ("so ¢275/¢25 = 11 quarters are needed", [(True, 11)]),
    # thousands grouped with spaces; times with a leading zero are no quantities
    ("Thus, 5 650 000 - 5 000 000 = 650 000 cars are left", [(True, 650000)]),
    ("$1\\,000 + 2\\,000 = 3\\,000$", [(True, 3000)]),
    ("He has to leave at 0900-0130 = 0730 hours", []),
    # a unit conversion after a result is no calculation: "2 hours = 120 minutes"
    ("Thus, he has 4-2=2 hours=120 minutes left", [(True, 2)]),
    # a left side told partly in words: a label, a list, the tail of a sum
    ("Gretchen bowled a 120 + Mitzi bowled a 113 + Beth bowled an 85 = 318 combined score.", []),
    ("So he pays for lessons 13,15,17&19 = 4 lessons.", []),
    ("Remaining 10 = 62,300/10 = $6230", [(True, 6230)]),
    ("10 cows on the boat - 6 drowned = 4 cows made it", []),
    ("Amanda spent 2 tapes * $9/tape + $25 = $43.", []),
    # ... but a sign that starts the expression, and a claim that starts a sentence, are checked
    ("we get -3 + 5 = 8", [(False, 8)]),
    ("So the area is 12. 45 = 9 * 6", [(False, 54)]),
    # a congruence written with "=" and \pmod after it
    ("$74 = -1 \\pmod{15}$", []),
    # integer division with its remainder said
    ("100 stickers / 3 friends = 33 stickers for each friend, with 1 remaining.", []),
    # a fraction of a quantity is a product; a mixed number before a product is one quantity
    ("She eats 3/4 of 20 = 15 grapes.", [(True, 15)]),
    ("She eats 3/4 of 20 = 16 grapes.", [(False, 16)]),
    ("He runs 1 1/2 * 4 = 6 miles.", [(True, 6)]),
    ("He runs 1 1/2 * 4 = 5 miles.", [(False, 5)]),
    # unicode as chat models write it: vulgar fractions, superscripts, the fraction slash
    ("He gives away ½ of 10 = 4 apples.", [(False, 4)]),
    ("10 ÷ ½ = 20 pieces", [(True, 20)]),
    ("2¼ × 4 = 9 kg", [(True, 9)]),
    ("2 ¼ × 4 = 8 kg", [(False, 8)]),
    ("The area is 5² = 25 square cm.", [(True, 25)]),
    ("The volume is 3³ = 9.", [(False, 9)]),
    ("10⁻² × 300 = 3", [(True, 3)]),
    ("3⁄4 × 8 = 6", [(True, 6)]),
]


@pytest.mark.parametrize(("step", "expected"), CALCS)
def test_extract_calculations(step, expected):
    got = [(c.ok, c.result) for c in extract_calculations(step)]
    assert got == [(ok, Fraction(r)) for ok, r in expected]


@pytest.mark.parametrize(("expr", "value"), [
    ("1 + 2 * 3", 7), ("(1 + 2) * 3", 9), ("2^3^2", 512), ("-2^2", -4), ("\\frac{1}{2} + \\frac13", Fraction(5, 6)),
    ("\\sqrt[3]{27}", 3), ("2\\sqrt{9}", 6), ("1,000 + 1", 1001), ("50\\%", Fraction(1, 2)), ("٣ + ٤", 7),
])
def test_evaluate(expr, value):
    assert evaluate(expr) == value


@pytest.mark.parametrize("expr", [
    "9**9**9", "10^{10^{10}}", "2^100000", "(" * 10000 + "1" + ")" * 10000, "1/0", "300!", "9" * 500,
    "__import__('os').system('echo')", "x + 1", "nan", "", "(-8)^{1/3}",
])
def test_evaluate_refuses(expr):
    with pytest.raises(EvalError):
        evaluate(expr)


def test_of_after_a_word_that_takes_no_operand_keeps_the_whole_calculation():
    from verifier.arith import extract_calculations

    got = [(c.text, c.ok) for c in extract_calculations("It rained for a total of 3.79+4.5+3.95 = 14 inches")]
    assert got == [("3.79 + 4.5 + 3.95 = 14", False)]
    assert [c.ok for c in extract_calculations("He spent a total of 12*5 = 60 dollars")] == [True]
    # "half of 50 = 25", "a third of 30 = 10": the modifier takes the operand, nothing to check
    assert extract_calculations("She gave half of 50 = 25 apples") == []
    assert extract_calculations("a third of 30 = 10") == []


def test_a_letter_after_an_apostrophe_is_no_variable():
    from verifier.arith import extract_calculations

    assert [(c.text, c.ok) for c in extract_calculations("so that’s 180*.05 = 8 days")] == [("180 * .05 = 8", False)]
    assert [c.ok for c in extract_calculations("so that's 180*.05 = 9 days")] == [True]


def test_by_takes_an_operand_only_after_an_operation():
    from verifier.arith import extract_calculations

    # "increase by" names an amount: the expression after it is a whole calculation
    got = [(c.text, c.ok) for c in extract_calculations("The price will increase by $12000-$4000 = $6400")]
    assert got == [("12000 - 4000 = 6400", False)]
    assert [c.ok for c in extract_calculations("It went up by 12000 - 4000 = 8000 dollars")] == [True]
    # "divided by 4 = 10", "multiplied by 3 = 12": the operation's left operand is not in the run
    assert extract_calculations("40 divided by 4 = 10") == []
    assert extract_calculations("then it is multiplied by 3 = 12") == []
    assert extract_calculations("reduced by 5 = 20") == []


def test_ratios_times_and_named_functions_are_no_calculations():
    """A ratio or a time ("2:5", "3:15") and a function the channel does not know ("cis(0)") are not cut into
    false calculations (PRM800K solutions rated good: "20 * 2:5 = 4:10 = 8", "cis(4\\pi) = cis(0) = 1")."""
    from verifier.arith import extract_calculations, numbers_in

    assert extract_calculations("So 20 * 2:5 = 4:10 = 8.") == []
    assert extract_calculations("At 3:15 = 15 minutes past 3.") == []
    assert numbers_in("The ratio 2:5") == [2, 5]  # the numbers are still the text's
    assert [(c.text, c.ok) for c in extract_calculations("Ratio 1:2 means 3 * 2 = 7 cups.")] == [("3 * 2 = 7", False)]
    assert extract_calculations("That gives $cis\\left(4\\pi\\right) = cis\\left(0\\right) = 1$.") == []
    assert extract_calculations("$sgn(-3) = -1$") == []
    assert [c.ok for c in extract_calculations("$2(3+4) = 15$")] == [False]


def test_exact_values_beyond_the_float_range_are_compared_not_crashed():
    """Exact results reach 4,000 bits and a float ~1,024: comparing them must not raise OverflowError."""
    from verifier.arith import to_float, values_match

    big = Fraction(3) ** 2002
    # relative to the size, as for floats: big + 1 is big to 1e-9, 1.001 * big is not (but is "about" it)
    assert values_match(big, big) and values_match(big, big + 1) and not values_match(big, big * Fraction(1001, 1000))
    assert values_match(big, big * Fraction(1001, 1000), approx=True)
    assert not values_match(big, 1.5) and not values_match(1.5, big)
    assert to_float(big) == float("inf") and to_float(-big) == float("-inf")
    by_step = [[c.ok for c in extract_calculations(s)] for s in (
        "$4^{1002}=4\\cdot4^{1001}$", "$2^{1100} = 1.5$", "$3^{1500}/3^{1499} = 3$")]
    assert by_step == [[True], [False], [True]]


def test_flat_expressions_take_the_parsers_value_and_errors():
    """The fast path for ``a op b op c`` (literals, + - * /) must agree with the recursive parser exactly:
    the same value and type, or the same error, also for percent literals read plainly."""
    import random

    from verifier.arith import _flat_value, _Parser, tokenize

    rng = random.Random(13)
    literals = ["0", "1", "2", "3.5", "12", "0.25", "50%", "7", "1000000000000", "9" * 40, "1/2", "0.1"]
    seen = 0
    for _ in range(3000):
        n = rng.randint(2, 6)
        text = " ".join(rng.choice(literals) + " " + rng.choice("+-*/") for _ in range(n - 1)) + " " + rng.choice(literals)
        toks = tokenize(text)
        for pct_plain in (False, True):
            def run(f):
                try:
                    v = f()
                    return type(v).__name__, v
                except EvalError as exc:
                    return "EvalError", str(exc)
            fast = run(lambda: _flat_value(toks, pct_plain))  # noqa: B023 - called at once
            if fast[1] is None:
                continue
            seen += 1
            assert fast == run(lambda: _Parser(toks, pct_plain).parse()), text  # noqa: B023
    assert seen > 5000
    assert _flat_value(tokenize("2 * (3 + 4)"), False) is None and _flat_value(tokenize("2^3 + 1"), False) is None


def test_words_subscripts_and_unit_ratios_tokenize_as_before():
    from verifier.arith import tokenize

    kinds = [(t.kind, t.text) for t in tokenize("ab_1 + x_1 = 3 cm/s and b_{n+1}")]
    assert kinds == [("word", "ab"), ("brk", "_"), ("num", "1"), ("op", "+"), ("var", "x_1"), ("eq", "="),
                     ("num", "3"), ("word", "cm/s"), ("word", "and"), ("var", "b_{n+1}")]
