"""The interface of process and outcome reward models, as search strategies see them."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Scorer(Protocol):
    """Scores a partial or complete solution, one score per step.

    `steps` are the solution's steps so far, in order, without their delimiter. A process reward
    model returns a score in [0, 1] for each step (the probability that the solution is still on
    track after it); an outcome model scores only the last step, and may return 0 for the others.
    Calls may come from many coroutines at once; the scorer batches them.
    """

    async def score(self, problem: str, steps: list[str]) -> list[float]: ...
