"""Adaptive self-consistency (Aggarwal et al., 2023, "Let's Sample Step by Step: Adaptive-
Consistency for Efficient Reasoning and Coding with LLMs"): sample in small waves and stop as
soon as the vote is settled, up to n samples.

After each wave, with v1 and v2 the votes of the two most common answers, the Beta stopping
criterion (their section 3) takes the leader's share among the two as p ~ Beta(v1 + 1, v2 + 1)
under a uniform prior and stops once P(p > 1/2) reaches `threshold`. Easy problems, where the
samples agree, stop after a wave or two; hard ones spend up to n. The answer is the majority of
every sample drawn, as plain self-consistency's.
"""

from __future__ import annotations

import math
import time

from pydantic import Field, model_validator

from tts.engine import Backend, Completion
from tts.search.base import SearchResult, StrategyConfig, Usage, pose
from tts.search.majority import voted
from tts.search.select import vote
from tts.seeds import derive_seed
from tts.verifiers import Scorer, extract_answer


class AdaptiveMajorityConfig(StrategyConfig):
    n: int = Field(64, ge=1, description="most solutions sampled")
    wave: int = Field(4, ge=1, description="solutions sampled between two checks of the vote")
    threshold: float = Field(
        0.95, gt=0.5, lt=1, description="stop once P(the leader is the majority) reaches this"
    )

    @model_validator(mode="after")
    def _wave_within_n(self) -> AdaptiveMajorityConfig:
        self.wave = min(self.wave, self.n)
        return self


def leader_probability(v1: int, v2: int) -> float:
    """P(p > 1/2) for p ~ Beta(v1 + 1, v2 + 1): the chance that the answer with v1 votes would
    beat the one with v2 over infinitely many samples. For integer parameters the Beta tail is a
    binomial sum: P(p > 1/2) = P(Binomial(v1 + v2 + 1, 1/2) <= v1)."""
    trials = v1 + v2 + 1
    return sum(math.comb(trials, j) for j in range(v1 + 1)) / 2**trials


class AdaptiveMajority:
    """Majority vote that samples wave by wave until the vote is settled or n are drawn."""

    def __init__(self, config: AdaptiveMajorityConfig) -> None:
        self.config = config

    async def solve(
        self,
        problem: str,
        backend: Backend,
        scorer: Scorer | None = None,
        prompt: str | None = None,
    ) -> SearchResult:
        config = self.config
        start, usage = time.perf_counter(), Usage()
        prompt = pose(backend.tokenizer, problem, config.instruction, prompt)
        result = await self.vote_until_settled(backend, prompt, [], usage)
        usage.seconds = time.perf_counter() - start
        return result

    async def vote_until_settled(
        self, backend: Backend, prompt: str, completions: list[Completion], usage: Usage
    ) -> SearchResult:
        """Add waves to `completions` (those drawn so far) until the vote is settled or n are
        drawn, and answer with their majority."""
        while len(completions) < self.config.n and not self.settled(completions):
            completions = completions + await self.wave(backend, prompt, len(completions), usage)
        return voted(completions, usage)

    async def wave(
        self, backend: Backend, prompt: str, drawn: int, usage: Usage
    ) -> list[Completion]:
        """The next wave after `drawn` samples, counted in `usage`."""
        size = min(self.config.wave, self.config.n - drawn)
        # The wave's place fixes its seed, so a capped or resumed run draws the same waves.
        params = self.config.sampling_params(size, seed=derive_seed(self.config.seed, drawn))
        completions = await backend.generate(prompt, params)
        usage.add(completions)
        return completions

    def settled(self, completions: list[Completion]) -> bool:
        """Whether the vote of `completions` passes the stopping criterion (none: it does not)."""
        votes = [len(c) for c in vote([extract_answer(c.text) for c in completions])] + [0, 0]
        return bool(completions) and leader_probability(votes[0], votes[1]) >= self.config.threshold
