"""The interface of process and outcome reward models, as search strategies see them."""

from __future__ import annotations

import math
from typing import Literal, Protocol, runtime_checkable

Aggregation = Literal["last", "min", "prod", "mean"]


@runtime_checkable
class Scorer(Protocol):
    """Scores a partial or complete solution, one score per step.

    `steps` are the solution's steps so far, in order, without their delimiter. A process reward
    model returns a score in [0, 1] for each step (the probability that the solution is still on
    track after it); an outcome model scores only the last step, and may return 0 for the others.
    Calls may come from many coroutines at once; the scorer batches them.
    """

    async def score(self, problem: str, steps: list[str]) -> list[float]: ...


def scorer_tokens(scorer: Scorer, problem: str, steps: list[str]) -> int:
    """Input tokens one `score` call costs, for usage accounting: scorers that run a model say so
    through an optional `count_tokens(problem, steps)`; others cost none."""
    count = getattr(scorer, "count_tokens", None)
    return count(problem, steps) if count is not None else 0


def aggregate(scores: list[float], how: Aggregation = "last") -> float:
    """One number for a solution from its per-step scores.

    "last" trusts the PRM's judgement of the whole prefix (what Qwen2.5-Math-PRM and the Hugging
    Face search-and-learn study use); "min" is the weakest step (Lightman et al., 2023, and
    Math-Shepherd, Wang et al., 2024); "prod" the chance that every step is right; "mean" the
    average. No steps scores 0.
    """
    if not scores:
        return 0.0
    if how == "last":
        return scores[-1]
    if how == "min":
        return min(scores)
    if how == "prod":
        return math.prod(scores)
    if how == "mean":
        return sum(scores) / len(scores)
    raise ValueError(f"unknown aggregation {how!r}; choose last, min, prod or mean")
