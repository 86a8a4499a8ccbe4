"""Self-consistency (Wang et al., 2023, "Self-Consistency Improves Chain of Thought Reasoning"):
sample n solutions and answer with the most common final answer.

Answers are clustered by `math_equal`, so `\\frac{1}{2}` and `0.5` vote together. Each
candidate's score is its cluster's vote share.
"""

from __future__ import annotations

import time

from pydantic import Field

from tts.engine import Backend, Completion
from tts.search.base import Candidate, SearchResult, StrategyConfig, Usage, pose
from tts.search.select import vote
from tts.verifiers import Scorer, extract_answer


class MajorityConfig(StrategyConfig):
    n: int = Field(16, ge=1, description="solutions sampled")


class Majority:
    """Majority vote over n sampled solutions."""

    def __init__(self, config: MajorityConfig) -> None:
        self.config = config

    async def solve(
        self,
        problem: str,
        backend: Backend,
        scorer: Scorer | None = None,
        prompt: str | None = None,
    ) -> SearchResult:
        start, usage = time.perf_counter(), Usage()
        prompt = pose(backend.tokenizer, problem, self.config.instruction, prompt)
        completions = await backend.generate(prompt, self.config.sampling_params(self.config.n))
        usage.add(completions)
        result = voted(completions, usage)
        usage.seconds = time.perf_counter() - start
        return result


def voted(completions: list[Completion], usage: Usage) -> SearchResult:
    """The majority answer of `completions`, each a candidate scored by its answer's vote share."""
    answers = [extract_answer(c.text) for c in completions]
    clusters = vote(answers)
    share = {i: len(c) / len(answers) for c in clusters for i in c}
    candidates = [
        Candidate(c.text, a, share.get(i, 0.0), len(c.token_ids), c.finish_reason)
        for i, (c, a) in enumerate(zip(completions, answers))
    ]
    winner = candidates[clusters[0][0]] if clusters else None
    return SearchResult(
        answer=winner.answer if winner else None,
        text=winner.text if winner else candidates[0].text,
        candidates=candidates,
        usage=usage,
    )
