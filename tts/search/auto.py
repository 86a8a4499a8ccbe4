"""Compute-optimal test-time scaling per problem (Snell et al., 2024, "Scaling LLM Test-Time
Compute Optimally can be More Effective than Scaling Model Parameters", section 3): pick the
strategy by the problem's difficulty. Their finding: on easy problems sampling and voting is the
best use of compute; on hard ones a verifier-guided search is.

Difficulty comes from a cheap probe: the first `probe` samples, and how many of them agree (the
model-predicted difficulty of their section 3.2 with agreement instead of a verifier's mean
score, so it costs no scorer tokens). When the leading answer holds at least `agreement` of the
probe, the problem is easy: voting goes on as adaptive self-consistency (the probe is its first
wave) and stops once the vote is settled. Otherwise the `hard` strategy gets the rest of the
budget, n - probe solutions' worth, and answers; by default particle filtering weighted by the
PRM and the policy's likelihood of each step, the best fixed strategy at 16 samples on the
built-in model's tuning problems (docs/frontier.md).
Every sample, the probe's included, is in the candidates and the usage.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import Field, model_validator

from tts.engine import Backend
from tts.errors import TTSError
from tts.search.adaptive_majority import AdaptiveMajority, AdaptiveMajorityConfig
from tts.search.base import Candidate, SearchResult, Strategy, StrategyConfig, Usage, pose
from tts.search.registry import make_strategy
from tts.search.select import vote
from tts.verifiers import Scorer, extract_answer

# What `auto` passes on to the strategies it runs: every shared option but the budget.
SHARED = set(StrategyConfig.model_fields) - {"token_budget"}
# The hard strategy's options when `hard_options` is not given: the PRM and the policy's
# likelihood together, with weights chosen on arith tuning problems (synth:arith:3:300 and
# synth:arith:3:400:eval:5), never on the problems the frontier reports (docs/frontier.md).
DEFAULT_HARD_OPTIONS = {
    "particle_filter": {"confidence_weight": 3.0},
    "weighted_best_of_n": {"aggregation": "min", "confidence_weight": 2.0, "prm_weight": 2.0},
}


class AutoConfig(StrategyConfig):
    n: int = Field(16, ge=2, description="budget: about n solutions' worth of samples")
    probe: int = Field(4, ge=1, description="solutions sampled first to judge the difficulty")
    agreement: float = Field(
        0.75, gt=0, le=1, description="probe share of the leading answer that makes it easy"
    )
    threshold: float = Field(
        0.95, gt=0.5, lt=1, description="easy problems: adaptive voting's stopping criterion"
    )
    hard: str = Field("particle_filter", description="the strategy for hard problems")
    hard_options: dict[str, Any] | None = Field(
        None, description="its own options (n is the rest); None: DEFAULT_HARD_OPTIONS"
    )

    @model_validator(mode="after")
    def _valid_plan(self) -> AutoConfig:
        if self.probe >= self.n:
            raise ValueError(f"probe ({self.probe}) must leave part of the budget n ({self.n})")
        self.hard_strategy()  # a bad hard strategy or option fails when the config is made
        return self

    def shared(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in SHARED}

    def hard_strategy(self) -> Strategy:
        if self.hard == "auto":
            raise ValueError("auto cannot be its own hard strategy")
        own = (
            DEFAULT_HARD_OPTIONS.get(self.hard, {})
            if self.hard_options is None
            else self.hard_options
        )
        options = self.shared() | own | {"n": self.n - self.probe}
        try:
            return make_strategy(self.hard, **options)
        except TTSError as error:
            raise ValueError(f"hard strategy: {error}") from None


class Auto:
    def __init__(self, config: AutoConfig) -> None:
        self.config = config
        self.voting = AdaptiveMajority(
            AdaptiveMajorityConfig(
                **config.shared(), n=config.n, wave=config.probe, threshold=config.threshold
            )
        )

    async def solve(
        self,
        problem: str,
        backend: Backend,
        scorer: Scorer | None = None,
        prompt: str | None = None,
    ) -> SearchResult:
        config = self.config
        start, usage = time.perf_counter(), Usage()
        posed = pose(backend.tokenizer, problem, config.instruction, prompt)
        probe = await self.voting.wave(backend, posed, 0, usage)
        clusters = vote([extract_answer(c.text) for c in probe])
        if clusters and len(clusters[0]) >= config.agreement * len(probe):
            result = await self.voting.vote_until_settled(backend, posed, probe, usage)
        else:
            result = await config.hard_strategy().solve(problem, backend, scorer, prompt)
            result.candidates += [
                Candidate(c.text, extract_answer(c.text), None, len(c.token_ids), c.finish_reason)
                for c in probe
            ]
            result.usage.add(probe)
        result.usage.seconds = time.perf_counter() - start
        return result
