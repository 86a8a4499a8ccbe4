"""Best-of-N with a reward model: sample N whole solutions, score each, pick by the scores.

`best_of_n` keeps the single highest-scored solution (Cobbe et al., 2021, "Training Verifiers to
Solve Math Word Problems"); `weighted_best_of_n` sums the scores of solutions that reach the same
answer and answers with the heaviest (Li et al., 2023). A solution's steps are its text split at
the step delimiter, scored by a process reward model and aggregated to one number.
"""

from __future__ import annotations

import asyncio
import time

from pydantic import Field

from tts.engine import Backend
from tts.errors import TTSError
from tts.search.base import Candidate, SearchResult, StrategyConfig, Usage, pose
from tts.search.select import Selection, select
from tts.verifiers import Aggregation, Scorer, aggregate, extract_answer, scorer_tokens


class BestOfNConfig(StrategyConfig):
    n: int = Field(16, ge=1, description="solutions sampled")
    step_delimiter: str = Field("\n\n", min_length=1, description="text that ends a step")
    aggregation: Aggregation = Field(
        "last", description="per-step scores to one: last|min|prod|mean"
    )
    selection: Selection = Field("best", description="final pick: best|weighted|majority")


class WeightedBestOfNConfig(BestOfNConfig):
    selection: Selection = Field("weighted", description="final pick: best|weighted|majority")


class BestOfN:
    def __init__(self, config: BestOfNConfig) -> None:
        self.config = config

    async def solve(
        self,
        problem: str,
        backend: Backend,
        scorer: Scorer | None = None,
        prompt: str | None = None,
    ) -> SearchResult:
        if scorer is None:
            raise TTSError("best-of-N needs a reward model (--prm)")
        config = self.config
        start, usage = time.perf_counter(), Usage()
        prompt = pose(backend.tokenizer, problem, config.instruction, prompt)
        completions = await backend.generate(prompt, config.sampling_params(config.n))
        usage.add(completions)
        steps = [
            [step for step in c.text.split(config.step_delimiter) if step.strip()] or [c.text]
            for c in completions
        ]
        scores = await asyncio.gather(*(scorer.score(problem, s) for s in steps))
        usage.scorer_calls += len(steps)
        usage.scorer_tokens += sum(scorer_tokens(scorer, problem, s) for s in steps)
        candidates = [
            Candidate(
                c.text,
                extract_answer(c.text),
                aggregate(s, config.aggregation),
                len(c.token_ids),
                c.finish_reason,
            )
            for c, s in zip(completions, scores)
        ]
        chosen = select(candidates, config.selection)
        usage.seconds = time.perf_counter() - start
        return SearchResult(chosen.answer, chosen.text, candidates, usage=usage)
