"""The one user turn of every stage: SFT, sampling, DPO and evaluation all build their prompt here.

A problem becomes the user message ``question.strip() + "\\n" + instruction`` (the question alone when
the instruction is empty), and every stage applies the model's own chat template to that message with
the assistant generation prompt. TRL's trainers apply the template themselves to the conversational
rows built from :func:`user_messages`; sampling and evaluation call :func:`chat_prompt`. A test checks
that the resulting prompt token ids are identical in all four stages for the same problem::

    >>> user_turn("  Tom has 3 apples. How many?  ", "Put the answer in \\\\boxed{}.")
    'Tom has 3 apples. How many?\\nPut the answer in \\\\boxed{}.'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def user_turn(question: str, instruction: str | None) -> str:
    """The user message: the stripped question, a newline, the instruction (when there is one)."""
    question = question.strip()
    instruction = (instruction or "").strip()
    return f"{question}\n{instruction}" if instruction else question


def user_messages(prompt: str, few_shot: Sequence[tuple[str, str]] = ()) -> list[dict[str, str]]:
    """Chat messages for an already built user turn, after optional (user turn, answer) examples."""
    messages: list[dict[str, str]] = []
    for q, a in few_shot:
        messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    messages.append({"role": "user", "content": prompt})
    return messages


def chat_prompt(tokenizer: Any, question: str, instruction: str | None,
                few_shot: Sequence[tuple[str, str]] = ()) -> str:
    """The model's chat template around :func:`user_turn`, ending with the assistant generation prompt.

    ``few_shot`` (question, answer) pairs come first as user/assistant turns, each user turn with the
    same instruction."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} has no chat_template")
    shots = [(user_turn(q, instruction), a) for q, a in few_shot]
    return tokenizer.apply_chat_template(user_messages(user_turn(question, instruction), shots),
                                         tokenize=False, add_generation_prompt=True)


def prompt_token_ids(tokenizer: Any, prompt_text: str) -> list[int]:
    """How sampling and evaluation tokenise a :func:`chat_prompt` string (the template has the specials)."""
    return tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
