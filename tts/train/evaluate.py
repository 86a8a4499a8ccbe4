"""The held-out score every training loop logs: pass@1, graded by `tts.data.grading.grade_answer`.

pass@1 of a problem is the share of its samples whose extracted answer is right; the score is
the mean over problems. SFT asks for one greedy sample per problem (its greedy accuracy), GRPO
for `eval_samples` at the rollout temperature, seeded the same at every evaluation, so the
curve moves only with the weights.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np

from tts.data.grading import grade_answer
from tts.data.problem import Problem
from tts.engine import Backend, SamplingParams
from tts.prompts import build_prompt
from tts.verifiers import extract_answer


def pass_at_1(
    backend: Backend,
    problems: list[Problem],
    instruction: str,
    params: Callable[[Problem], SamplingParams],
) -> float:
    """Mean pass@1 over `problems`, each posed with `instruction` and sampled with
    `params(problem)`; every request is in flight at once, so the backend batches them."""

    async def one(problem: Problem) -> float:
        prompt = build_prompt(backend.tokenizer, problem.problem, instruction)
        completions = await backend.generate(prompt, params(problem))
        right = [grade_answer(problem, extract_answer(c.text)) for c in completions]
        return sum(right) / len(right)

    async def every() -> list[float]:
        return await asyncio.gather(*(one(problem) for problem in problems))

    return float(np.mean(asyncio.run(every())))
