"""Compute-optimal test-time scaling per problem (Snell et al., 2024, "Scaling LLM Test-Time
Compute Optimally can be More Effective than Scaling Model Parameters", section 3): what pays
depends on the problem's difficulty. On easy problems a little parallel sampling is enough and
more saturates early; on hard ones the whole budget goes to a verifier-guided search.

Difficulty comes from a cheap probe, as their model-predicted difficulty (section 3.2): the
strategy `probe_with` spends `probe` solutions' worth on every problem, and its answer's support
(the share of its candidates behind the answer, each counted by its score: a verifier's, or a
vote share) says how sure it is. At `confidence` or above the problem is easy and the probe's
answer stands. Otherwise the `hard` strategy spends the rest of the budget, n - probe
solutions' worth, with its own seed. When both stages run the same strategy their scores share
one scale, and the answer is chosen among both stages' candidates by that strategy's own
`selection` (particle filtering: their summed scores); otherwise it is the hard stage's answer.

Snell et al. vote on easy problems; on the built-in model a particle filter weighted by the PRM
and the policy's likelihood beats the vote at every budget (docs/frontier.md), so it is the
default for both stages and auto decides how much of it a problem gets. Every sample, the
probe's included, is in the candidates and the usage.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import Field, model_validator

from tts.engine import Backend
from tts.errors import TTSError
from tts.search.base import SearchResult, Strategy, StrategyConfig
from tts.search.registry import make_strategy
from tts.search.select import same_answer, select
from tts.seeds import derive_seed
from tts.verifiers import Scorer

# What `auto` passes on to the strategies it runs: every shared option but the budget.
SHARED = set(StrategyConfig.model_fields) - {"token_budget"}
# A stage's options when its own are not given: the PRM and the policy's likelihood together,
# with weights chosen on arith tuning problems (synth:arith:3:300 and synth:arith:3:400:eval:5),
# never on the problems the frontier reports (docs/frontier.md).
DEFAULT_OPTIONS = {
    "particle_filter": {"confidence_weight": 3.0},
    "weighted_best_of_n": {"aggregation": "min", "confidence_weight": 2.0, "prm_weight": 2.0},
}


class AutoConfig(StrategyConfig):
    n: int = Field(16, ge=2, description="budget: at most n solutions' worth of samples")
    probe: int = Field(4, ge=1, description="solutions' worth spent first, on every problem")
    probe_with: str = Field("particle_filter", description="the strategy that spends them")
    probe_options: dict[str, Any] | None = Field(
        None, description="its own options (n is the probe); None: DEFAULT_OPTIONS"
    )
    confidence: float = Field(
        0.4, ge=0, le=1, description="the probe answer's support that makes a problem easy"
    )
    hard: str = Field("particle_filter", description="the strategy for the rest of the budget")
    hard_options: dict[str, Any] | None = Field(
        None, description="its own options (n is the rest); None: DEFAULT_OPTIONS"
    )

    @model_validator(mode="after")
    def _valid_plan(self) -> AutoConfig:
        if self.probe >= self.n:
            raise ValueError(f"probe ({self.probe}) must leave part of the budget n ({self.n})")
        self.probe_stage()  # a bad strategy or option fails when the config is made
        self.hard_stage()
        return self

    def probe_stage(self) -> Strategy:
        return self._stage("probe", self.probe_with, self.probe_options, self.probe)

    def hard_stage(self) -> Strategy:
        return self._stage("hard", self.hard, self.hard_options, self.n - self.probe)

    def _stage(self, stage: str, name: str, options: dict[str, Any] | None, n: int) -> Strategy:
        if name == "auto":
            raise ValueError(f"auto cannot be its own {stage} strategy")
        own = DEFAULT_OPTIONS.get(name, {}) if options is None else options
        shared = {field: getattr(self, field) for field in SHARED}
        # Each stage draws its own samples: the hard one must not replay the probe's.
        seed = {"seed": derive_seed(self.seed, stage)}
        try:
            return make_strategy(name, **(shared | own | seed | {"n": n}))
        except TTSError as error:
            raise ValueError(f"{stage} strategy: {error}") from None


def support(result: SearchResult) -> float:
    """The share of `result`'s candidates behind its answer, each counted by its score (1 when
    it has none); 0 without an answer. A vote scores each candidate by its answer's share, so
    for `majority` this is the agreement squared: 0.5625 when 3 of 4 agree."""
    if result.answer is None or not result.candidates:
        return 0.0
    behind = [
        c
        for c in result.candidates
        if c.answer is not None and same_answer(c.answer, result.answer)
    ]
    return sum(1.0 if c.score is None else c.score for c in behind) / len(result.candidates)


class Auto:
    def __init__(self, config: AutoConfig) -> None:
        self.config = config
        self.probe, self.hard = config.probe_stage(), config.hard_stage()

    async def solve(
        self,
        problem: str,
        backend: Backend,
        scorer: Scorer | None = None,
        prompt: str | None = None,
    ) -> SearchResult:
        config = self.config
        start = time.perf_counter()
        result = await self.probe.solve(problem, backend, scorer, prompt)
        if support(result) < config.confidence:
            hard = await self.hard.solve(problem, backend, scorer, prompt)
            hard.candidates = result.candidates + hard.candidates
            if config.probe_with == config.hard:
                how = getattr(self.hard.config, "selection", "weighted")
                chosen = select(hard.candidates, how)
                hard.answer, hard.text = (chosen.answer, chosen.text) if chosen else (None, "")
            hard.usage.include(result.usage)
            result = hard
        result.usage.seconds = time.perf_counter() - start
        return result
