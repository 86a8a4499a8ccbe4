"""Which training problems a GRPO step rolls out (`problem_draw`): uniformly, by a curriculum
from easy to hard, or by failure rate (Kimi k1.5, Sec. 2.3.4: P(problem) proportional to 1 - its
success rate). Every draw is seeded by (seed, step, round), so a resumed run draws what an
uninterrupted one does."""

from __future__ import annotations

import math
import random

import numpy as np

from tts.data.problem import Problem
from tts.errors import TTSError
from tts.seeds import derive_seed
from tts.train.grpo_config import GRPOConfig


class ProblemDraw:
    """Draws training problems by `problem_draw`; `success` holds the last success rate seen
    per problem (the failure draw weighs by 1 - it; unseen problems start at their pass rate
    from `tts data difficulty` if the dataset has one, else 0). It goes into the checkpoint."""

    def __init__(self, problems: list[Problem], config: GRPOConfig) -> None:
        self.problems, self.config = problems, config
        rates = [p.metadata.get("pass_rate") for p in problems]
        if config.problem_draw == "curriculum" and None in rates:
            raise TTSError(
                f"the curriculum draw needs pass rates: make {config.dataset} with "
                "`tts data difficulty` and train on its output"
            )
        self.success = {p.id: float(r or 0.0) for p, r in zip(problems, rates)}
        # Easiest first: the curriculum's order.
        self.by_ease = sorted(problems, key=lambda p: -self.success[p.id])

    def draw(self, step: int, round_: int, count: int) -> list[Problem]:
        """`count` distinct problems (all of them if fewer) for draw round `round_` of `step`."""
        rng = random.Random(derive_seed(self.config.seed, "draw", step, round_))
        if self.config.problem_draw == "uniform":
            return rng.sample(self.problems, min(count, len(self.problems)))
        if self.config.problem_draw == "curriculum":
            # The pool grows linearly from the easiest quarter to every problem at half of
            # training, then stays whole.
            share = min(1.0, 0.25 + 1.5 * step / self.config.max_steps)
            pool = self.by_ease[: max(count, math.ceil(share * len(self.by_ease)))]
            return rng.sample(pool, min(count, len(pool)))
        weights = [1.0 - self.success[p.id] + 1e-3 for p in self.problems]
        picked = np.random.default_rng(rng.getrandbits(32)).choice(
            len(self.problems),
            size=min(count, len(self.problems)),
            replace=False,
            p=np.array(weights) / sum(weights),
        )
        return [self.problems[i] for i in picked]
