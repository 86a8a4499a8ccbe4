"""Particle Gibbs over reasoning steps (Puri et al., 2025, "A Probabilistic Inference Approach to
Inference-Time Scaling of LLMs using Particle-Based Monte Carlo Methods", section 3.2 and
Algorithm 2; Andrieu, Doucet & Holenstein, 2010, "Particle Markov chain Monte Carlo methods").

A particle filter spends its budget in one sweep, and once its particles collapse onto one line
of reasoning the rest of the sweep only copies it. Particle Gibbs splits the budget into
`iterations` filters of n / iterations particles. After each filter one of its final particles
is drawn by weight as the reference, and the next filter runs conditioned on it: the reference
holds a place at every step, weighs in every resampling and can be copied, but is never
dropped, so a good solution found once survives while the other particles search around it. The
answer is chosen by `selection` among the last filter's particles, the reference included.

Each filter is `particle_filter`'s (`run_filter`): the same weights, systematic resampling, and
the policy's likelihood with `confidence_weight`. With `iterations=1` this is that filter.
"""

from __future__ import annotations

import random

from pydantic import Field, model_validator

from tts.search.particle_filter import (
    ParticleConfig,
    ParticleFilter,
    particle_weights,
    run_filter,
    systematic_resample,
)
from tts.search.steps import StepSearch
from tts.search.tree import Node


class ParticleGibbsConfig(ParticleConfig):
    """N = n particles in all, n / iterations per filter."""

    iterations: int = Field(
        2, ge=1, description="filters in turn, each kept on a solution the last one drew"
    )

    @model_validator(mode="after")
    def _filters_of_two_or_more(self) -> ParticleGibbsConfig:
        # After the first filter the reference takes a place: one more must be left to search.
        if self.n % self.iterations or (self.iterations > 1 and self.n // self.iterations < 2):
            raise ValueError(
                f"n ({self.n}) must be a multiple of iterations ({self.iterations}) "
                "with at least 2 particles per filter"
            )
        return self


class ParticleGibbs(ParticleFilter):
    """The particle filter's `solve`, with `iterations` conditional filters as its sweep."""

    config: ParticleGibbsConfig

    async def sweep(self, search: StepSearch, rng: random.Random) -> list[Node]:
        config = self.config
        size = config.n // config.iterations
        particles = await run_filter(search, size, rng)
        for _ in range(config.iterations - 1):
            # The likelihood weighed in as each step was drawn; a finished particle's weight is
            # its PRM score, as in the filter's own last draws.
            weights = particle_weights(
                [node.score for node in particles], config.resample_temperature
            )
            reference = search.tree.path(particles[systematic_resample(weights, 1, rng)[0]])
            particles = await run_filter(search, size, rng, reference)
        return particles
