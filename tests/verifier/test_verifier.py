"""MathVerifier on realistic good and flawed solutions (GSM8K- and MATH-style), aggregation, semantics."""

from __future__ import annotations

import json

import pytest

from conf.schema import VerifyConfig
from verifier import DIMENSIONS, MathVerifier, Verdict, aggregate, similarity, split_steps

Q_CLIPS = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
           "How many clips did Natalia sell altogether in April and May?")
GOOD_CLIPS = ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
              "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72")
Q_WENG = "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn?"
Q_CIRCLE = "What is the area of a circle with radius 3? Express your answer in terms of $\\pi$."
Q_SYS = "If $3p+e=124$ and $5p+e=182$, what is $p$?"

CASES = [
    # (name, question, solution, gold, flagged dims, first_error_step, correct)
    ("gsm8k reference", Q_CLIPS, GOOD_CLIPS, "72", set(), None, True),
    ("model output, boxed", Q_WENG,
     "Weng earns $12 per hour, which is 12/60 = $0.2 per minute.\nFor 50 minutes she earns 0.2 x 50 = $10.\n"
     "So the answer is $\\boxed{10}$.", "10", set(), None, True),
    ("wrong calculation propagates", Q_CLIPS,
     "In May she sold 48/2 = 26 clips.\nAltogether she sold 48 + 26 = 74 clips.\nThe answer is 74.", "72",
     {"symbolic_validity", "answer_correctness"}, 0, False),
    ("right steps, wrong final answer", Q_CLIPS,
     "Natalia sold 48/2 = 24 clips in May.\nShe sold 48+24 = 72 clips in total.\n#### 70", "72",
     {"logical_consistency", "answer_correctness"}, 2, False),
    ("swapped steps", Q_CLIPS,
     "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n"
     "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72", "72",
     {"step_ordering", "logical_consistency"}, 0, True),
    ("truncated", Q_CLIPS, "Natalia sold 48/2 = 24 clips in May.\nSo in total she sold 48 + 24 = 72 cl", "72",
     {"structural_integrity"}, None, True),
    ("repetitive", Q_CLIPS,
     "Natalia sold 48/2 = 24 clips in May.\n" * 5 + "She sold 48+24 = 72 clips.\n#### 72", "72",
     {"structural_integrity"}, None, True),
    ("off-topic", Q_CLIPS,
     "The weather in Paris is usually mild and pleasant during the spring season.\n"
     "Elephants are the largest land animals and live in herds.\nThe answer is 12.", "72",
     {"semantic_alignment", "answer_correctness"}, 2, False),
    ("math style correct", Q_CIRCLE,
     "The area of a circle is $\\pi r^2$.\nWith $r = 3$ we get $\\pi \\cdot 3^2 = 9\\pi$.\n"
     "So the area is $\\boxed{9\\pi}$.", "9\\pi", set(), None, True),
    ("math style arithmetic slip", Q_SYS,
     "Subtract the first equation from the second: $2p = 182 - 124 = 68$.\nSo $p = \\frac{68}{2} = 34$.\n"
     "# Answer\n\n34", "29", {"symbolic_validity", "answer_correctness"}, 0, False),
    # p = 58/2 is broken LaTeX, so 29 comes from an equation the checks cannot read: not a contradiction of
    # the last derived value 58 (the same shape as a correct "$2h = 44 - 30 = 14$, or $h = \boxed{7}$");
    # with the right answer a typesetting slip is not an erroneous step
    ("unbalanced latex", Q_SYS,
     "Subtract: $2p = 182 - 124 = 58$.\nSo $p = \\frac{58}{2 = 29$.\n\\boxed{29}", "29",
     {"structural_integrity"}, None, True),
]


@pytest.mark.parametrize(("name", "question", "solution", "gold", "flagged", "first", "correct"), CASES,
                         ids=[c[0] for c in CASES])
def test_cases(name, question, solution, gold, flagged, first, correct):
    v = MathVerifier().score(question, solution, gold)
    assert v.status == "ok", v.notes
    assert v.correct is correct, v.notes
    got = {d for d, x in v.dims.items() if x >= 0.3}
    assert got == flagged, (got, v.notes)
    assert v.first_error_step == first, (v.first_error_step, v.notes)
    assert all(0.0 <= x <= 1.0 for x in v.dims.values())
    assert set(v.dims) == set(DIMENSIONS)


def test_steps_as_list_and_reference_locates_first_error():
    steps = ["Natalia sold 48/2 = <<48/2=24>>24 clips in May.", "She also sold 24 + 10 = 34 clips on sale.",
             "In total 48 + 24 + 34 = 106 clips.", "#### 106"]
    v = MathVerifier().score(Q_CLIPS, steps, "72", reference=GOOD_CLIPS)
    assert v.steps == steps and not v.correct
    # every calculation is right; the reference's intermediate values (24, 72) show step 1 goes off track
    assert MathVerifier().score(Q_CLIPS, steps, "72").first_error_step != 1
    assert v.dims["symbolic_validity"] == 0.0
    assert v.first_error_step == 1


Q_EGGS = ("Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins for her "
          "friends every day with four. She sells the remainder at the farmers' market daily for $2 per fresh duck "
          "egg. How much in dollars does she make every day at the farmers' market?")
REF_EGGS = ("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\n"
            "She makes 9 * 2 = $<<9*2=18>>18 every day at the farmer's market.\n#### 18")
ROUTE = ["To find out how much Janet makes, we need to determine how many eggs she sells.",
         "Janet's ducks lay 16 eggs per day. She eats 3 for breakfast and uses 4 for muffins, so she uses 3 + 4 = 7 eggs.",
         "The number of eggs she sells is 16 - 7 = 9 eggs."]


@pytest.mark.parametrize(("steps", "gold_first"), [
    # 7 is not in the reference, but 16 - 7 = 9 is: another route, and the error is the price
    (ROUTE + ["She sells each egg for $3, so she makes 9 × 3 = $27 per day.", "The final answer is: $\\boxed{27}$"], 3),
    (ROUTE + ["She sells each egg for $2, so she makes 9 × 2 = $18 per day.", "The final answer is: $\\boxed{18}$"], None),
    # 13 never comes back to the reference: forgetting the muffins is the first error
    (["Janet has 16 eggs and eats 3, so she has 16 - 3 = 13 eggs left to sell.", "At $2 per egg, she makes 13 * 2 = $26.",
      "Therefore, she makes $\\boxed{26}$ dollars every day."], 0),
])
def test_reference_deviation_allows_another_route(steps, gold_first):
    v = MathVerifier().score(Q_EGGS, steps, "18", reference=REF_EGGS)
    assert v.first_error_step == gold_first, v.notes


def test_aggregation_formula():
    cfg = VerifyConfig()
    v = MathVerifier(cfg).score(Q_CLIPS, "In May she sold 48/2 = 26 clips.\n#### 74", "72")
    w = cfg.wrongness.model_dump()
    assert v.wrongness == pytest.approx(sum(w[d] * v.dims[d] for d in DIMENSIONS) / sum(w.values()), abs=1e-6)
    assert v.wrongness == aggregate(v.dims, cfg.wrongness)
    only_answer = {d: 0.0 for d in DIMENSIONS} | {"answer_correctness": 1.0}
    assert aggregate(only_answer, {"answer_correctness": 2.0, "symbolic_validity": 2.0}) == 0.5


def test_verdict_survives_the_jsonl_round_trip_and_rejects_unknown_fields():
    """Stages write verdicts as JSON lines and read them back with this schema: nothing may change on the way
    (dims, None first_error_step, notes), and a row with a field the schema does not know is an error."""
    import pydantic

    for solution in (GOOD_CLIPS, "In May she sold 48/2 = 26 clips.\n#### 74", ""):
        v = MathVerifier().score(Q_CLIPS, solution, "72", problem_id="gsm8k_train-0", index=3)
        back = Verdict.model_validate_json(v.model_dump_json())
        assert back == v and back.dims == v.dims and back.first_error_step == v.first_error_step
    row = v.model_dump() | {"unexpected": 1}
    with pytest.raises(pydantic.ValidationError):
        Verdict.model_validate(row)


def test_split_steps():
    assert split_steps(GOOD_CLIPS)[-1] == "#### 72"
    assert split_steps("We have\n\\[\nx = 3 + 4\n\\]\nSo $x = 7$.") == ["We have\n\\[\nx = 3 + 4\n\\]", "So $x = 7$."]
    assert split_steps("") == [] and split_steps("   \n ") == []
    assert split_steps("Step 1: 3+4=7. Step 2: 7*2=14.") == ["Step 1: 3+4=7.", "Step 2: 7*2=14."]


def test_a_new_turn_after_the_answer_is_not_checked():
    """A model that answers, then writes a new question and a wrong answer to it (as base models do without
    stop sequences): the verdict is on its answer, and the cut is named in the notes."""
    good = "She sells 16 - 3 - 4 = 9 eggs.\nShe makes 9 * 2 = 18 dollars.\nThe answer is 18."
    tail = "\n\nQuestion: A robe takes 2 bolts of blue fiber and half that much white fiber.\nAnswer: 2 + 1 = 4. The answer is 4."
    v = MathVerifier(VerifyConfig(embedding_model=None))
    alone, cont = v.score(Q_EGGS, good, "18"), v.score(Q_EGGS, good + tail, "18")
    assert cont.correct and cont.first_error_step is None and cont.dims == alone.dims, cont.notes
    assert any("new turn" in n for n in cont.notes)
    assert v.score(Q_EGGS, good + "<|im_end|>" + tail, "18").correct


def test_reasoning_model_output_is_read_without_its_markers():
    """A reasoning model's <think> block and <answer> tag: the markers are no steps (step indices count the
    reasoning only), the tag is the final answer, and a slip in the thinking is the first error."""
    good = "<think>\nShe uses 3 + 4 = 7 eggs.\nShe sells 16 - 7 = 9 eggs.\nShe makes 9 * 2 = 18 dollars.\n</think>\n<answer>18</answer>"
    assert split_steps(good)[0] == "She uses 3 + 4 = 7 eggs." and split_steps(good)[-1] == "<answer>18</answer>"
    v = MathVerifier(VerifyConfig(embedding_model=None))
    ok = v.score(Q_EGGS, good, "18")
    assert ok.correct and ok.first_error_step is None, ok.notes
    bad = v.score(Q_EGGS, good.replace("= 9 eggs", "= 8 eggs").replace("9 * 2 = 18", "8 * 2 = 16").replace(">18<", ">16<"), "18")
    assert not bad.correct and bad.first_error_step == 1, bad.notes


def test_similarity():
    a = GOOD_CLIPS
    b = "In May, Natalia sold 48/2 = 24 clips. So 48 + 24 = 72 clips in all.\n#### 72"
    c = "The train travels 60 miles per hour for 3 hours, so 60*3 = 180 miles.\n#### 180"
    assert similarity(a, a) == 1.0
    assert 0.0 <= similarity(a, c) < similarity(a, b) <= 1.0
    assert similarity("", "") == 0.0


def test_embedding_model_missing_falls_back_to_lexical():
    v = MathVerifier(VerifyConfig(embedding_model="/nonexistent/model")).score(Q_CLIPS, GOOD_CLIPS, "72")
    assert v.status == "ok" and v.correct
    assert any("lexical" in n for n in v.notes)


# ---------------------------------------------------------------- quantity tracking
Q_BOOKS = ("There are 235 books in a library. On Tuesday, 227 books are taken out. On Thursday, 56 books are "
           "brought back and 35 books are taken out again on Friday. How many books are there now?")
REF_BOOKS = ("On Tuesday, 227 books were taken, so there are 235 - 227= <<235-227=8>>8 books left.\n"
             "56 books were brought back on Thursday, so there are 8 + 56 = <<8+56=64>>64 books in the library.\n"
             "Finally, 35 books are taken out on Friday, leaving 64 - 35 = <<64-35=29>>29 books available.\n#### 29")
Q_BARRY = ("Barry wants a shirt. The attendant gives him a 15% special discount. The price tag on the shirt says $80. "
           "How much is he supposed to pay now?")
REF_BARRY = ("15% of $80 = (15/100)*$80 = $<<(15/100)*80=12>>12\n"
             "The dollar amount of the discount is $12 so he is supposed to pay just $80-$12 = $<<80-12=68>>68\n#### 68")


def _steps(text: str) -> list[str]:
    return split_steps(text)


def test_small_value_used_before_it_is_derived():
    """A swapped pair: 8 is used in step 0 but only derived in step 1 (small numbers are not exempt)."""
    s = _steps(REF_BOOKS)
    swapped = [s[1], s[0], *s[2:]]
    v = MathVerifier().score(Q_BOOKS, swapped, "29")
    assert v.dims["step_ordering"] >= 0.6 and v.first_error_step == 0, v.notes
    assert any("uses 8 before step 1 derives it" in n for n in v.notes)


Q_DONUTS = ("Andrew is having two of his friends over for a sleepover. For one friend, Brian, he asks his mother to "
            "buy 3 donuts. He asks for his other friend, Samuel, to get the same. A day before the sleepover Andrew "
            "ends up inviting two more friends and asks his mother to buy them the same amount of donuts. Just in "
            "case, Andrew's mother wants to buy one more donut for each of Andrew's friends. Andrew's mother is going "
            "to buy the same amount of donuts for Andrew as everybody else. How many donuts will Andrew's mother "
            "need to buy?")
REF_DONUTS = ("Andrew is having 4 friends over who will get 3 donuts each, 4 x 3 = <<4*3=12>>12 donuts total.\n"
              "Andrew's mother wants to get 1 extra donut for each of Andrew's friends, 3 donuts + 1 extra = <<3+1=4>>4 "
              "donuts for each of Andrew's friends.\n"
              "Andrew's mother is buying 12 + 4 extra donuts for Andrew's friends = <<12+4=16>>16 total donuts.\n"
              "Andrew's mother is also going to get 3 + 1 extra donut for Andrew = <<3+1=4>>4 donuts.\n"
              "Andrew's mother will need to buy 16 donuts for Andrew's friends + 4 donuts for Andrew = <<16+4=20>>20 "
              "total donuts.\n#### 20")
Q_FUEL = ("Mr. Alvarez spends $36 on diesel fuel each week. If the cost of diesel fuel is $3 per gallon, how many "
          "gallons of diesel fuel does Mr. Alvarez use in two weeks?")
FUEL = "In a week, Mr. Alvarez uses $36/$3 = {w} gallons a week.\nSo in two weeks, he uses {w} x 2 = {t} gallons.\n#### {t}"


def test_a_value_that_a_later_step_derives_as_another_quantity_is_no_ordering_error():
    """"4 friends" in step 0 and "3 + 1 = 4 donuts" in step 1: the same number, two quantities."""
    v = MathVerifier().score(Q_DONUTS, REF_DONUTS, "20")
    assert v.correct and v.first_error_step is None and v.dims["step_ordering"] == 0.0, v.notes


def test_currency_signs_around_a_division_are_no_math_span():
    """"$36/$3 = 12" is 36 / 3 = 12, not a span "36/" and a claim "3 = 12"; a slip there is still caught."""
    good = MathVerifier().score(Q_FUEL, FUEL.format(w=12, t=24), "24")
    assert good.first_error_step is None and good.dims["symbolic_validity"] == 0.0, good.notes
    bad = MathVerifier().score(Q_FUEL, FUEL.format(w=13, t=26), "24")
    assert bad.first_error_step == 0 and any("36 / 3 = 13 is wrong" in n for n in bad.notes), bad.notes


def test_value_stated_in_prose_then_derived_later_is_out_of_order():
    s = _steps(REF_BARRY)
    v = MathVerifier().score(Q_BARRY, [s[1], s[0], s[2]], "68")
    assert v.dims["step_ordering"] >= 0.6 and v.first_error_step == 0, v.notes


@pytest.mark.parametrize("reference", [False, True])
def test_dropped_step_uses_a_quantity_that_is_never_derived(reference):
    s = _steps(REF_BARRY)
    v = MathVerifier().score(Q_BARRY, s[1:], "68", reference=REF_BARRY if reference else None)
    if reference:  # the reference derives 12: this solution asserts it without deriving it
        assert v.dims["logical_consistency"] >= 0.6, v.notes
        assert any("reference derives" in n for n in v.notes)
    # the answer is right: a skipped derivation is flagged in its dimension, not named as an erroneous step
    assert v.correct and v.first_error_step is None, v.notes
    assert MathVerifier().score(Q_BARRY, REF_BARRY, "68", reference=REF_BARRY).dims["logical_consistency"] == 0


def test_dropped_step_without_reference_flags_a_sourceless_operand():
    s = _steps(REF_BOOKS)
    v = MathVerifier().score(Q_BOOKS, [s[0], s[2], s[3]], "29")  # 64 is neither given nor derived
    assert v.dims["logical_consistency"] >= 0.3 and v.correct and v.first_error_step is None, v.notes
    # with a wrong final answer and no stronger evidence (a wrong calculation, a learned rejection) the weak
    # flag is where the error is located; with the learned channel on, its rejection of a step counts as
    # stronger evidence (docs/verifier.md, "First erroneous step"), so this rule is checked without it
    wrong = [s[0], s[2], s[3].replace("29", "31")]
    w = MathVerifier(VerifyConfig(step_scorer=None, embedding_model=None)).score(Q_BOOKS, wrong, "29")
    assert not w.correct and w.first_error_step == 1, (wrong, w.notes)
    learned = MathVerifier(VerifyConfig(embedding_model=None)).score(Q_BOOKS, wrong, "29")
    assert not learned.correct and learned.first_error_step in (1, 2), learned.notes


CLEAN = [
    # clean GSM8K-style references that use unstated but licensed quantities: no flags
    ("legs", "A pet store has 5 dogs, 2 cats and 10 birds. How many legs do the pets have?",
     "The dogs have 5 * 4 = <<5*4=20>>20 legs.\nThe cats have 2 * 4 = <<2*4=8>>8 legs.\n"
     "The birds have 10 * 2 = <<10*2=20>>20 legs.\nIn total 20 + 8 + 20 = <<20+8+20=48>>48 legs.\n#### 48", "48"),
    ("percent increase factor", "Jamaal used an 8-pound weight and increases it by 50%. Then he uses a weight 2 "
     "pounds lighter than that. What weight does he use?",
     "An increase of 50% of 8 is 1.5*8=<<1.5*8=12>>12.\nHe switches to a 12-2=<<12-2=10>>10 pound weight.\n#### 10",
     "10"),
    ("fraction in the question", "It takes 1/4 pound of butter to make 1 dozen croissants. He makes 4 dozen a day "
     "for a week. How many pounds of butter does he need?",
     "He makes 4 dozen so that's 4*.25 = <<4*.25=1>>1 pound of butter a day.\nFor 7 days he needs 1*7 = "
     "<<1*7=7>>7 pounds.\n#### 7", "7"),
    ("answer in cents", "A $24.00 bottle gives 240 washes. How much does each wash cost, in cents?",
     "Each wash costs 24/240 = $<<24/240=0.10>>0.10\n#### 10", "10"),
    ("rounded final answer", "Of 96 cards, 32 are water type. What percent are water type, to the nearest integer?",
     "The share of water type cards is 32 / 96 * 100 = 33.333 percent, which rounds to 33.\n#### 33", "33"),
    ("minutes per hour", "Weng earns $12 an hour. She babysat for 50 minutes. How much did she earn?",
     "She earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nSo 0.2 * 50 = $<<0.2*50=10>>10.\n#### 10", "10"),
    ("unicode root", "A right triangle has legs 3 and 4. How long is the hypotenuse?",
     "The squares sum to 3*3 + 4*4 = <<3*3+4*4=25>>25.\nThe hypotenuse is √25=5 inches.\n#### 5", "5"),
]


@pytest.mark.parametrize(("name", "question", "solution", "gold"), CLEAN, ids=[c[0] for c in CLEAN])
def test_clean_solutions_raise_no_flags(name, question, solution, gold):
    for reference in (None, solution):
        v = MathVerifier().score(question, solution, gold, reference=reference)
        flagged = {d for d, x in v.dims.items() if x >= 0.3}
        assert flagged == set() and v.first_error_step is None, (flagged, v.notes)


def test_reference_deviation_only_with_a_stepwise_reference():
    # a wrong answer reached through 8 * 56 = 448 (the reference adds): the GSM8K reference, which holds every
    # intermediate value, locates the error at that step; a LaTeX (MATH-style) reference takes its own route
    # and is not used to locate one (the fallback names the step where the wrong final value first appears)
    s = _steps(REF_BOOKS)
    wrong = [s[0], "56 books were brought back, so there are 8 * 56 = 448 books.", "448 - 35 = 413 books.", "#### 413"]
    v = MathVerifier().score(Q_BOOKS, wrong, "29", reference=REF_BOOKS)
    assert not v.correct and v.first_error_step == 1, v.notes
    latex_ref = "We have $235 - 227 + 56 - 35 = \\boxed{29}$."
    w = MathVerifier().score(Q_BOOKS, wrong, "29", reference=latex_ref)
    assert not w.correct and w.first_error_step == 2, w.notes


Q_JACKET = "A jacket costs $80. The shop gives a 15% discount. How much does the jacket cost after the discount?"
JACKET = ["15% of $80 = (80/100)*$80 = $64", "The discount is $64, so the jacket costs $80-$64 = $16", "#### 16"]


@pytest.mark.parametrize("label", ["Step {k}: ", "**Step {k}:** ", "### Step {k}. "])
def test_step_labels_are_no_numbers_of_the_solution(label):
    """ "Step 3:" labels (chat models number their steps) change no verdict: the label's number is no operand,
    value or answer. Here the first step uses the wrong operand (80/100 instead of 15/100)."""
    plain = MathVerifier().score(Q_JACKET, JACKET, "68")
    labelled = MathVerifier().score(Q_JACKET, [label.format(k=k + 1) + s for k, s in enumerate(JACKET)], "68")
    assert plain.first_error_step == 0, plain.notes
    assert (labelled.first_error_step, labelled.correct, labelled.dims) == (0, False, plain.dims), labelled.notes
    assert labelled.steps == JACKET


def test_false_flag_probe_rewrites_a_reference_in_chat_styles_and_counts_flags(tmp_path, capsys, load_script):
    """scripts/false_flag_probe.py: the four forms keep the reference's calculations and answer, and a correct
    reference (here the donuts one, whose "4 friends" once read as a step out of order) gets no first error."""
    probe = load_script("false_flag_probe")
    f = probe.forms("He uses $36/$3 = $<<36/3=12>>12 a week.\nIn two weeks, 12 x 2 = <<12*2=24>>24 gallons.\n#### 24")
    assert "<<" not in f["plain"] and f["plain"].endswith("The answer is 24.")
    assert "**Step 2:**" in f["markdown"] and "12 \\times 2 = 24" in f["markdown"] and "\\boxed{24}" in f["markdown"]
    assert "\\(12 \\times 2 = 24\\)" in f["inline"] and f["inline"].endswith("#### 24")
    (tmp_path / "gsm8k").mkdir()
    rows = [{"question": Q_DONUTS, "answer": REF_DONUTS}, {"question": Q_FUEL, "answer": FUEL.format(w=12, t=24)}]
    (tmp_path / "gsm8k" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert probe.main(["--data", str(tmp_path), "--n", "2"]) == 0
    out = capsys.readouterr().out
    for form in ("source", "plain", "markdown", "inline"):
        assert f"| {form} | 2 | 0 (0.0%) | 0 |" in out, out


def test_a_partial_solution_is_not_graded_as_a_wrong_answer():
    """PRM800K's rated rows are prefixes: with ``partial`` a missing final answer names no first error by
    itself, while the gold answer still reaches the step scores; a finished solution with no answer does."""
    v = MathVerifier(VerifyConfig(embedding_model=None))
    q = "What is $3 \\cdot 4 + 5$?"
    prefix = ["First we multiply: $3 \\cdot 4 = 12$."]
    part = v.analyze(q, prefix, "17", partial=True)
    assert not part.correct and part.first_error_step is None, part.notes
    assert v.analyze(q, prefix, "17").first_error_step == 0  # as a finished solution it states no answer
    # the gold answer informs the learned channel on a prefix too: reaching 17 is a step on track
    on_track = v.analyze(q, [*prefix, "Then $12 + 5 = 17$."], "17", partial=True).step_probs[-1]
    assert on_track < v.analyze(q, [*prefix, "Then $12 + 5 = 17$."], "", partial=True).step_probs[-1]
    # a wrong calculation in a prefix is still its first error
    assert v.analyze(q, ["First $3 \\cdot 4 = 13$."], "17", partial=True).first_error_step == 0
