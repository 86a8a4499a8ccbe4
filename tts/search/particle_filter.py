"""Particle filtering over reasoning steps (Puri et al., 2025, "A Probabilistic Inference
Approach to Inference-Time Scaling of LLMs using Particle-Based Monte Carlo Methods").

Search treats the PRM's scores as ground truth and keeps only the best prefixes, so one early
misjudgement prunes the right answer for good. Particle filtering treats them as noisy evidence:
n particles (partial solutions) are extended one step at a time; each is weighted by its PRM
score, as softmax(logit(score) / `resample_temperature`) over the particles (their Algorithm 1,
with the PRM's probability read as a likelihood through its log-odds); then n particles are drawn
with replacement by those weights (systematic resampling: one uniform offset, n evenly spaced
points, so a particle with weight w gets floor(n w) or ceil(n w) copies and the draw adds little
noise), and each copy of an unfinished particle is extended by its own sampled next step. A
finished particle keeps its final weight and stays in the draw, so good solutions multiply and
bad ones die out; the search ends when every particle has finished. The answer is chosen among
the final particles (copies count again, as the particle approximation of the posterior) by
`selection`.

With `confidence_weight` c > 0 the policy's own likelihood joins the PRM: each new step's weight
is multiplied by pi(step)^c, the incremental importance weight of sequential Monte Carlo whose
target is the power distribution pi(solution)^(1+c) and whose proposal is pi itself (Karan & Du,
2025, "Reasoning with Sampling: Your Base Model is Smarter Than You Think", sample from pi^alpha
by MCMC instead). A slip, a token the policy found unlikely, costs its particle at the step it
happens, where a PRM that cannot check the arithmetic sees nothing. A particle that finished in
an earlier round took no new step: its factor is 1.

With `filters` k > 1 the n particles run as k independent filters of n / k, one after another,
and the answer is chosen among all their final particles. The weights of one filter concentrate
on its likeliest line of reasoning, so past a point more particles only copy it; independent
filters keep k lines apart, as DVTS splits beam search into independent subtrees (Beeching et
al., 2024) for the same reason.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import Counter

from pydantic import Field, model_validator

from tts.engine import Backend
from tts.search.base import SearchResult
from tts.search.select import Selection
from tts.search.steps import StepConfig, StepSearch
from tts.search.tree import Node
from tts.seeds import derive_seed
from tts.verifiers import Scorer


class ParticleConfig(StepConfig):
    """How particles are weighed: what particle filtering and particle Gibbs share."""

    resample_temperature: float = Field(
        1.0, gt=0, description="softmax temperature of the weights; lower follows the PRM harder"
    )
    selection: Selection = Field("weighted", description="final pick: best|weighted|majority")
    confidence_weight: float = Field(
        0.0, ge=0, description="exponent c of each new step's likelihood pi(step)^c; 0: off"
    )


class ParticleFilterConfig(ParticleConfig):
    """N = n particles in all, n / filters per filter."""

    filters: int = Field(1, ge=1, description="independent filters the n particles are split into")

    @model_validator(mode="after")
    def _filters_divide_n(self) -> ParticleFilterConfig:
        if self.n % self.filters:
            raise ValueError(f"n ({self.n}) must be a multiple of filters ({self.filters})")
        return self


def particle_weights(
    scores: list[float],
    temperature: float,
    logprobs: list[float] | None = None,
    confidence_weight: float = 0.0,
) -> list[float]:
    """softmax(logit(score) / temperature + confidence_weight x logprob): PRM probabilities, and
    the policy's log-probabilities of the particles' new steps, as normalised particle weights."""
    logprobs = logprobs or [0.0] * len(scores)
    logits = [
        _logit(score) / temperature + confidence_weight * logprob
        for score, logprob in zip(scores, logprobs)
    ]
    top = max(logits)
    exps = [math.exp(logit - top) for logit in logits]
    total = sum(exps)
    return [e / total for e in exps]


def systematic_resample(weights: list[float], n: int, rng: random.Random) -> list[int]:
    """n indices drawn by `weights` with one uniform offset (Kitagawa, 1996): index i is drawn
    floor(n w_i) or ceil(n w_i) times."""
    offset = rng.random() / n
    picks, cumulative, index = [], weights[0], 0
    for k in range(n):
        point = offset + k / n
        while point > cumulative and index < len(weights) - 1:
            index += 1
            cumulative += weights[index]
        picks.append(index)
    return picks


async def run_filter(
    search: StepSearch, n: int, rng: random.Random, reference: list[Node] | None = None
) -> list[Node]:
    """One particle filter of n particles over `search`'s tree, from its root until every
    particle has finished; the final particles, copies repeated.

    With a `reference` (the nodes of one solution, its first step to its last) this is the
    conditional filter that particle Gibbs iterates (Andrieu, Doucet & Holenstein, 2010): the
    reference holds one of the n places in every round, at its step of that round (its last
    once it has finished), weighs in every draw and may be copied by the others, but is never
    dropped; the draw fills the other n - 1 places.
    """
    config = search.config
    free = n - 1 if reference else n

    def held(rounds: int) -> list[Node]:
        return [reference[min(rounds, len(reference)) - 1]] if reference else []

    particles = await search.expand(search.tree.root, free)
    await search.score(particles)
    rounds = 1  # steps taken; a particle whose step is new this round stands at that depth
    while not all(node.terminal for node in particles + held(rounds)):
        pool = particles + held(rounds)
        weights = particle_weights(
            [node.score for node in pool],
            config.resample_temperature,
            [node.logprob if node.depth == rounds else 0.0 for node in pool],
            config.confidence_weight,
        )
        copies = Counter(systematic_resample(weights, free, rng))
        finished: list[Node] = []
        growing: list[tuple[Node, int]] = []
        for index, count in sorted(copies.items()):
            node = pool[index]
            if node.terminal:
                finished += [node] * count
            else:
                growing.append((node, count))
        expansions = await asyncio.gather(*(search.expand(node, k) for node, k in growing))
        children = [child for group in expansions for child in group]
        await search.score(children)
        particles = finished + children
        rounds += 1
    return particles + held(rounds)


class ParticleFilter:
    def __init__(self, config: ParticleFilterConfig) -> None:
        self.config = config

    async def solve(
        self,
        problem: str,
        backend: Backend,
        scorer: Scorer | None = None,
        prompt: str | None = None,
    ) -> SearchResult:
        config = self.config
        search = StepSearch(
            config, problem, backend, scorer, prompt, logprobs=config.confidence_weight > 0
        )
        rng = random.Random(derive_seed(config.seed, "resample"))
        return search.result(await self.sweep(search, rng))

    async def sweep(self, search: StepSearch, rng: random.Random) -> list[Node]:
        """The final particles the answer is chosen among: those of every filter."""
        config = self.config
        particles: list[Node] = []
        # In turn, not at once: a filter's first steps take their seeds from the children the
        # root already has, so filters started together would draw the same ones.
        for _ in range(config.filters):
            particles += await run_filter(search, config.n // config.filters, rng)
        return particles


def _logit(p: float) -> float:
    p = min(max(p, 1e-7), 1 - 1e-7)
    return math.log(p / (1 - p))
