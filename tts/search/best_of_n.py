"""Best-of-N with a reward model: sample N whole solutions, score each, pick by the scores.

`best_of_n` keeps the single highest-scored solution (Cobbe et al., 2021, "Training Verifiers to
Solve Math Word Problems"); `weighted_best_of_n` sums the scores of solutions that reach the same
answer and answers with the heaviest (Li et al., 2023). A solution's steps are its text split at
the step delimiter, scored by a process reward model and aggregated to one number.

With `confidence_weight` > 0 the policy's own confidence joins the PRM's: a solution scores
PRM^prm_weight x exp(confidence_weight x (log pi(solution) - the best log pi among the n)), a
product of experts of the verifier and the policy's likelihood (the sum of its sampled tokens'
log-probabilities, DeepConf's signal at the scale of the whole trace). The two err differently:
the PRM misjudges steps it cannot check, the policy is unsure where it slipped.
"""

from __future__ import annotations

import asyncio
import math
import time

from pydantic import Field

from tts.engine import Backend
from tts.errors import TTSError
from tts.search.base import Candidate, SearchResult, StrategyConfig, Usage, log_likelihood, pose
from tts.search.select import Selection, select
from tts.verifiers import Aggregation, Scorer, aggregate, extract_answer, scorer_tokens


class BestOfNConfig(StrategyConfig):
    n: int = Field(16, ge=1, description="solutions sampled")
    step_delimiter: str = Field("\n\n", min_length=1, description="text that ends a step")
    aggregation: Aggregation = Field(
        "last", description="per-step scores to one: last|min|prod|mean"
    )
    selection: Selection = Field("best", description="final pick: best|weighted|majority")
    prm_weight: float = Field(1.0, ge=0, description="exponent of the PRM's aggregated score")
    confidence_weight: float = Field(
        0.0, ge=0, description="weight of the policy's log-likelihood in each score; 0: off"
    )


class WeightedBestOfNConfig(BestOfNConfig):
    selection: Selection = Field("weighted", description="final pick: best|weighted|majority")


def split_steps(text: str, delimiter: str) -> list[str]:
    """A whole solution's steps, as the PRM scores them: the text between delimiters, blank ones
    dropped (the text itself when it has none)."""
    return [step for step in text.split(delimiter) if step.strip()] or [text]


def product_of_experts(
    prm: float, likelihood_gap: float, prm_weight: float, confidence_weight: float
) -> float:
    """PRM^prm_weight x exp(confidence_weight x likelihood_gap), where likelihood_gap is the
    solution's log pi minus the best among the n (<= 0, so the best-liked solution keeps its
    PRM score)."""
    return prm**prm_weight * math.exp(confidence_weight * likelihood_gap)


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
        logprobs = 0 if config.confidence_weight else None
        completions = await backend.generate(
            prompt, config.sampling_params(config.n, logprobs=logprobs)
        )
        usage.add(completions)
        steps = [split_steps(c.text, config.step_delimiter) for c in completions]
        scores = await asyncio.gather(*(scorer.score(problem, s) for s in steps))
        usage.scorer_calls += len(steps)
        usage.scorer_tokens += sum(scorer_tokens(scorer, problem, s) for s in steps)
        likelihoods = [log_likelihood(c) for c in completions]
        best = max(likelihoods)
        candidates = [
            Candidate(
                c.text,
                extract_answer(c.text),
                product_of_experts(
                    aggregate(s, config.aggregation),
                    likelihood - best,
                    config.prm_weight,
                    config.confidence_weight,
                ),
                len(c.token_ids),
                c.finish_reason,
            )
            for c, s, likelihood in zip(completions, scores, likelihoods)
        ]
        chosen = select(candidates, config.selection)
        usage.seconds = time.perf_counter() - start
        return SearchResult(chosen.answer, chosen.text, candidates, usage=usage)
