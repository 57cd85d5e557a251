"""MathVerifier: answer extraction/equivalence, step splitting, six error dimensions, aggregation.

    >>> from verifier import MathVerifier, answers_equal
    >>> answers_equal("#### 18", "The answer is $\\\\boxed{18}$.")
    True
    >>> MathVerifier().score(question, solution, gold="72").wrongness  # doctest: +SKIP
"""

from verifier.answers import answers_equal, extract_answer
from verifier.core import VERIFIER_VERSION, MathVerifier, aggregate
from verifier.semantic import similarity
from verifier.steps import split_steps
from verifier.verdict import DIMENSIONS, Verdict

__all__ = [
    "DIMENSIONS",
    "VERIFIER_VERSION",
    "MathVerifier",
    "Verdict",
    "aggregate",
    "answers_equal",
    "extract_answer",
    "similarity",
    "split_steps",
]
