"""The algebra channel (verifier.symbolic), LaTeX spans, subscripts and rounding tolerance, on realistic
good and flawed GSM8K- and MATH-style solutions."""

from __future__ import annotations

import time

import pytest

from conf.schema import VerifyConfig
from verifier import MathVerifier
from verifier.arith import _with_vars, extract_calculations, latex_tokens, split_math, tokenize
from verifier.symbolic import check_algebra, identical, parse_side


def _alg(*steps: str, question: str = "") -> list[tuple[str, bool]]:
    return [(c.text, c.ok) for cs in check_algebra(list(steps), question=question) for c in cs]


def _node(text: str):
    return parse_side(latex_tokens(_with_vars(tokenize(text), latex=True)))


# ---------------------------------------------------------------- rewrites
@pytest.mark.parametrize(("step", "ok"), [
    ("Expanding, $(x+2)^2 = x^2+2x+4$.", False),
    ("Expanding, $(x+2)^2 = x^2+4x+4$.", True),
    ("$3(x+2) = 3x+5$", False),
    ("$x^2 - 5x + 6 = (x-2)(x-3)$", True),
    ("$x^2 - 5x + 6 = (x-2)(x-4)$", False),
    ("$(a+b)^2 = a^2 + 2ab + b^2 = a^2 + b^2 + ab$", False),  # the second link of a verified chain
    ("$\\frac{x^2-1}{x-1} = x+1$", True),  # random points: a rational function
    ("$x_1^2 + x_2^2 = (x_1+x_2)^2 - 2x_1x_2$", True),
    ("$\\dfrac{6x^2}{3x} = 2x$", True),
    ("$\\sqrt{4x^2} = 2x$", None),  # |2x|: true at some points only, left unchecked
])
def test_rewrites(step, ok):
    got = _alg(step)
    if ok is None:
        assert got == [], got
    else:
        assert got and got[-1][1] is ok, got


def test_rewrite_with_a_side_that_is_no_polynomial():
    """A chain link whose sides to_poly cannot read as polynomials (to_poly gives None) is still checked."""
    step = ("$$\\frac{x^5 + 7}{x + 1} = \\frac{(x^5 + 1) + 6}{x + 1} = \\frac{x^5 + 1}{x + 1} + \\frac{6}{x + 1}"
            " = x^4 - x^3 + x^2 - x + 1 + \\frac{6}{x - 1}.$$")
    got = _alg(step)
    assert got and got[-1][1] is False and "x - 1" in got[-1][0]


@pytest.mark.parametrize("steps", [
    ["We solve $2x + 3 = 7$, so $2x = 4$ and $x = 2$."],  # an equation, not a wrong identity
    ["Let $x = 5$.", "Define $f(x) = x^2 + 1$, so $f(5) = 26$."],  # definitions
    ["We have $(x+1)^2 = x^2 + 3$, so $2x = 2$ and $x = 1$."],  # an equation in rewrite shape
    ["Squaring gives $x^2 + 2x = x^2 + 4$."],
    ["Since $a + b + c = 0$, $a^3 + b^3 + c^3 = 3abc$."],  # relies on a constraint
    ["$y = 2x - 3$ and $-x + 3 = 1.8$ yields $x = 1.2$."],
    ["If $b$ were $2$, then $b^5 = 2^5 < 100$.", "So $b = 3$."],  # hypothetical values
    ["The sequence satisfies $a_{n+1} = a_n + 2$."],  # a recurrence
])
def test_equations_and_definitions_are_not_flagged(steps):
    assert all(ok is not False for _, ok in _alg(*steps)), _alg(*steps)


def test_constraint_in_the_question():
    assert _alg("Then $x^2 + 4x = 5$.", question="Suppose $x^2 + 4x - 5 = 0$.") == []


def test_substitution_of_assigned_values():
    assert _alg("Let $a = -3$ and $b = 3$.", "So $a+b=-3+3=0$.") == [("a + b = - 3 + 3", True)]
    assert _alg("Let $a = -3$ and $b = 4$.", "So $a+b=-3+3=0$.") == [("a + b = - 3 + 3", False)]


def test_identity_by_evaluation_and_expansion():
    assert identical(_node("(x+1)^3"), _node("x^3+3x^2+3x+1"), 1) is True
    assert identical(_node("\\frac{1}{x} + \\frac{1}{y}"), _node("\\frac{x+y}{xy}"), 1) is True
    assert identical(_node("\\frac{1}{x} + \\frac{1}{y}"), _node("\\frac{2}{x+y}"), 1) is False
    assert identical(_node("\\pi r^2"), _node("r^2 \\pi"), 1) is True


# ---------------------------------------------------------------- across steps: stated values, derived equations,
# continued expressions (PRM800K-style steps)
def _wrong(*steps: str, question: str = "") -> list[tuple[int, str]]:
    out = check_algebra(list(steps), question=question)
    return [(i, c.error) for i, cs in enumerate(out) for c in cs if c.ok is False]


@pytest.mark.parametrize(("steps", "question", "step", "says"), [
    (["So we want to solve $-x^2=4$.", "That gives $x=-2$."], "", 1, "x = -2 does not satisfy - x^2 = 4"),
    (["So we have $y_2^2=576-20.8^2$.", "So $y_2=15.6$."], "", 1, "y_2 = 15.6 does not satisfy"),
    (["We get $-\\frac{y}{3}-\\frac{4}{3}=-1$.", "So $y=-6$"], "", 1, "y = -6 does not satisfy"),
    (["Now solve for both.", "We obtain $x=3$ and $d=6$."], "The point satisfies $x + d = 10$.", 1,
     "d = 6, x = 3 does not satisfy x + d = 10 (the question)"),
    (["So $n(n-1)/2 = 90 + n^2 - 21n + 110$.", "The equation then becomes $n^2 - 21n = n^2 - n$."], "", 1,
     "keeps no root of"),
    (["The probability is $\\frac{120}{55440}$", "Which is $\\frac{1}{460}$."], "", 1, "does not hold"),
    (["So $A = (x+1)^2$", "$= x^2 + x + 1$"], "", 1, "is not an identity"),
])
def test_a_step_that_contradicts_the_steps_before_it(steps, question, step, says):
    got = _wrong(*steps, question=question)
    assert got and got[0][0] == step and says in got[0][1], got


@pytest.mark.parametrize("steps", [
    ["We solve $2x + 3 = 7$.", "So $x = 2$."],
    ["So $x^2 = 2$.", "So $x = 1.41$."],  # a rounding that the digits state
    ["So $x^2 - 5x + 6 = 0$.", "So $x = 2$ or $x = 3$."],
    ["So $x^2 - 5x + 6 = 0$.", "Factoring, this becomes $(x-2)(x-3) = 0$."],
    ["So $2x + 3 = 7$.", "Subtracting 3 gives $2x = 4$."],
    ["We need $n^4 = 4030$ at the boundary.", "Let's plug in $n = 8$."],  # a trial value
    ["Solving $2x=1.8$ yields $x=0.9$.", "Solving $-x+3=1.8$ yields $x=1.2$."],  # x solves a new equation
    ["So $c + g = 0$.", "So either $c = g = 0$, or $c = -1$ and $g = 1$."],
    ["We have two cases: $p^2 = 49$ or $p^2 = 121$.", "So $p^2 = 121$ gives $p = 11$."],
    ["The probability is $\\frac{120}{55440}$", "Which is $\\frac{1}{462}$."],
    ["So the answer is $10/3$.", "Which is $3.33$."],
    ["So $A = (x+1)^2$", "$= x^2 + 2x + 1$"],
    ["Now we add $x^2$ to both sides.", "This gives us $-11x^2 + 20x = -19x - 5$."],  # an equation, not a value
    ["There are 360 degrees, so we multiply $\\frac{5}{36}$ by 360.", "That's $50$ degrees."],
    ["Let's see what the polynomial is when $n = 9$.", "It's $9^4 - 2(9)^3 + 3(9)^2 - 2(9) - 4028$."],
    ["Write $A = I + B$ for the matrix $B$.", "Then $(I+B)^2 = I + 2B + B^2$."],  # matrices commute with I only
])
def test_consistent_steps_are_not_flagged(steps):
    assert _wrong(*steps) == []


# ---------------------------------------------------------------- subscripts and $ spans
def test_subscripts_are_symbols():
    for step in ("$x_1^2 + x_2^2 = 10$", "x_1^2 + x_2^2 = 4", "$a_{n+1} = 2^2$", "Then $x_1^2 = 2^2 + 1$."):
        assert [c for c in extract_calculations(step) if c.ok is False] == [], step
    assert [(c.ok, c.result) for c in extract_calculations("$x_1 + x_2 = 3 + 4 = 7$")] == [(True, 7)]


def test_dollar_delimits_math():
    assert split_math("the residue of $-811$ is $-811-(-816)=5$") == (
        ("the residue of ", False), ("-811", True), (" is ", False), ("-811-(-816)=5", True))
    # the chain does not run from one span into the next: -811 - 811 - (-816) = 5 would be "wrong"
    assert [(c.ok, c.result) for c in extract_calculations("the residue of $-811$ is $-811-(-816)=5$")] == [
        (True, 5)]
    assert split_math("$5 + $3 = $8") == (("$5 + $3 = $8", False),)  # currency
    assert [c.ok for c in extract_calculations("He paid $5 + $3 = $8.")] == [True]


@pytest.mark.parametrize("step", [
    "$7@4=7\\cdot4-2\\cdot7=14$",  # a custom operator
    "Testing $y=5$, we have $|5-6| + 2\\cdot 5 =11$, not 9.",
    "there are $9!/(4!\\cdot 5!)=9\\textbf{C}4$ ways",
    "$6.5^4 = 1785\\frac{1}{16}$",  # a mixed number
    "$10,\\!010-15=9,\\!995$",
    "Then we get $-6 = 2,$ which means that there are no solutions.",
    "\\begin{align*} 9! &\\equiv 1\\cdot 1 \\pmod{11}\\\\ &= 1 \\end{align*}",
    "\\[\\begin{pmatrix} 3 & -8 \\\\ a & 11 \\end{pmatrix} = \\begin{pmatrix} 1 & 3 \\end{pmatrix}\\]",
])
def test_latex_that_is_not_a_wrong_calculation(step):
    assert [c.text for c in extract_calculations(step) if c.ok is False] == []


# ---------------------------------------------------------------- rounding tolerance
@pytest.mark.parametrize(("step", "ok"), [
    ("The tickets cost 12 \\times 12.50 = 150.60 dollars.", False),
    ("The tickets cost $12 \\times 12.50 = 150.60$ dollars.", False),
    ("He pays 12 * 12.50 = 150.00 dollars.", True),
    ("$\\frac{22}{7} \\approx 3.14$", True),
    ("Each friend pays 10/3 = 3.33 dollars.", True),
    ("This is about 100/3 = 33.3 people.", True),
    ("Rounded to the nearest tenth, 17/3 = 5.7.", True),
    ("Rounded to the nearest tenth, 17/3 = 5.5.", False),
    ("A third is 0.33, so 0.33 * 90 = 30.", True),  # 0.33 itself rounded: 0.325..0.335 * 90 holds 30
    ("The area is about 3.14 * 10^2 = 314.", True),
])
def test_rounding_tolerance(step, ok):
    got = [c.ok for c in extract_calculations(step)]
    assert got and got[-1] is ok, got


# ---------------------------------------------------------------- whole solutions
Q_EXPAND = "Expand $(x+2)^2$."
Q_SUM = "Let $a$ and $b$ be the solutions of $x^2 + 3x - 4 = 0$ ... find $a+b$."


@pytest.mark.parametrize(("question", "solution", "gold", "flagged"), [
    (Q_EXPAND, "We have $(x+2)^2 = (x+2)(x+2) = x^2+4x+4$.\nSo the answer is $\\boxed{x^2+4x+4}$.",
     "x^2+4x+4", False),
    (Q_EXPAND, "We have $(x+2)^2 = (x+2)(x+2) = x^2+2x+4$.\nSo the answer is $\\boxed{x^2+2x+4}$.",
     "x^2+4x+4", True),
    ("Solve $2x + 3 = 7$.", "Subtract 3: $2x = 4$.\nDivide by 2: $x = \\boxed{2}$.", "2", False),
    ("Find $x_1^2 + x_2^2$ where $x_1, x_2$ are the roots of $x^2 - 3x + 1 = 0$.",
     "By Vieta, $x_1 + x_2 = 3$ and $x_1 x_2 = 1$.\nSo $x_1^2 + x_2^2 = (x_1+x_2)^2 - 2x_1x_2 = 9 - 2 = \\boxed{7}$.",
     "7", False),
    ("Tickets cost $\\$12.50$ each. How much do 12 tickets cost?",
     "12 tickets cost 12 \\times 12.50 = 150.60 dollars.\n#### 150.60", "150", True),
])
def test_math_style_solutions(question, solution, gold, flagged):
    v = MathVerifier().score(question, solution, gold)
    assert v.status == "ok", v.notes
    assert (v.dims["symbolic_validity"] > 0) is flagged, v.notes
    if not flagged:
        assert {d for d, x in v.dims.items() if x > 0 and d != "answer_correctness"} == set(), v.notes


# ---------------------------------------------------------------- algebra in plain text (no LaTeX)
Q_GAMES = "Frankie and Carla played 30 games. Carla won twice as many as Frankie. How many games did Carla win?"
LET_X = "Let x be the number of games that Frankie won.\nThen Carla won 2*x games.\n"


@pytest.mark.parametrize(("question", "solution", "gold", "flagged_step"), [
    (Q_GAMES, LET_X + "The sum is x+2*x=30 games.\nSo 3*x=30.\nThen x=<<10=10>>10 games.\nCarla won 2x=20 games.\n"
     "#### 20", "20", None),
    (Q_GAMES, LET_X + "The sum is x+2*x=30 games.\nSo 4*x=30.\nThen x=7.5 games.\nCarla won 2x=15 games.\n#### 15",
     "20", 3),  # 3x, not 4x
    ("Solve 2x + 3 = 11.", "Subtract 3: 2x = 8.\nDivide by 2: x = 5.\nThe answer is 5", "4", 1),
    ("Solve 2x + 3 = 11.", "Subtract 3: 2x = 8.\nDivide by 2: x = 4.\nThe answer is 4", "4", None),
    ("Expand (x+1)^2.", "We have (x+1)^2 = x^2 + x + 1.\nThe answer is x^2+x+1", "x^2+2x+1", 0),
    ("Expand (x+1)^2.", "We have (x+1)² = x² + 2x + 1.\nThe answer is x²+2x+1", "x^2+2x+1", None),
    # a reference's own slip: 150 = 10 + 4c does not give 4c = 150
    ("Jen has 10 more ducks than four times the number of chickens. If Jen has 150 ducks, how many chickens?",
     "Let the number of chickens be c.\nWe can write 150 =10+4c.\nSo, 4c = 150.\nAnd, there are c = <<35=35>>35 "
     "chickens.\n#### 35", "35", 3),
    # letters spaced from numbers are prose: "x" a times sign, "a" an article
    ("She earns $0.2 a minute for 50 minutes. How much?", "She earns 0.2 x 50 = 10 dollars.\n#### 10", "10", None),
    # units glued to numbers are no variables to solve for: 1m = 100cm and 1m = 1000mm do not contradict
    ("A rope is 2 m long. How many mm is that?", "Since 1m = 100cm and 1cm = 10mm, we get 1m = 1000mm.\n"
     "So 2m = 2000mm.\n#### 2000", "2000", None),
    ("A trip takes 2.5 hours. How many minutes?", "1h = 60min, so 2.5h = 150min.\n#### 150", "150", None),
])
def test_algebra_in_plain_text(question, solution, gold, flagged_step):
    v = MathVerifier().score(question, solution, gold)
    assert v.status == "ok", v.notes
    assert (v.dims["symbolic_validity"] > 0) is (flagged_step is not None), v.notes
    if flagged_step is not None:
        assert v.first_error_step == flagged_step, v.notes


HOSTILE = {
    "power tower": "$2^{2^{2^{100}}} = x^2 + 1 = (x+1)^2$",
    "huge variable power": "$(x+1)^{100000} = x^{100000} + 1$",
    "deep brackets": "$" + "(" * 5000 + "x" + ")" * 5000 + " = x$",
    "deep braces": "$\\frac{" * 2000 + "x" + "}{2}" * 2000 + " = x$",
    "long line": "$" + "+".join(["x"] * 30000) + " = 30000x$ " + "a" * 40000,
    "many chains": " ".join(f"$(x+{k})^2 = x^2+{2 * k}x+{k * k}$" for k in range(3000)),
    "wide polynomial": "$" + "".join(f"(x_{k}+1)" for k in range(60)) + " = 1$",
    "plain long line": "+".join(["x"] * 30000) + " = 30000x " + "a" * 40000,
    "plain deep brackets": "(" * 5000 + "x" + ")" * 5000 + " = x",
    "plain many chains": ". ".join(f"(x+{k})^2 = x^2+{2 * k}x+{k * k}" for k in range(3000)),
    "plain huge power": "(x+1)^100000 = x^100000 + 1",
}


@pytest.mark.parametrize("text", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_input_gets_a_verdict_within_the_budget(text):
    budget = 2.0
    verifier = MathVerifier(VerifyConfig(time_budget_s=budget)).warm_up()  # a model load is no part of the budget
    t0 = time.perf_counter()
    v = verifier.score("Simplify the expression.", text, "1")
    assert time.perf_counter() - t0 < budget + 1.0
    assert v.status in ("ok", "unparsed", "timeout")
    assert all(0.0 <= x <= 1.0 for x in v.dims.values())


def test_a_continuation_may_use_an_equation_the_question_states():
    """PRM800K (train, rated good): the question's A+M+C=12 lets the next step go on with "-12" in place of
    "-(A+M+C)"; without that equation the same continuation is no identity."""
    from verifier.symbolic import check_algebra

    q = "Let $A$, $M$, and $C$ be nonnegative integers such that $A+M+C=12$. What is the maximum of $AMC+AM+MC+CA$?"
    steps = ["Notice that the given expression is equal to $(A+1)(M+1)(C+1)-(A+M+C)-1$.",
             "This is equal to $(A+1)(M+1)(C+1)-12-1$."]
    assert [c.ok for c in check_algebra(steps, None, q)[1]] == [True]  # checked: -(A+M+C) + 12 = 0 by the question
    assert [c.ok for c in check_algebra(steps, None, "")[1]] == [False]
    wrong = [steps[0], "This is equal to $(A+1)(M+1)(C+1)-13-1$."]
    assert [c.ok for c in check_algebra(wrong, None, q)[1]] == [False]  # 13 is not what the question gives
