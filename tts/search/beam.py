"""Step-level beam search guided by a process reward model.

As in Snell et al. (2024), "Scaling LLM Test-Time Compute Optimally...", and Hugging Face's
search-and-learn: sample N first steps; keep the M best by PRM score (the beam width); expand
each kept partial solution into N/M next steps, so N candidates are in play at every depth;
score, keep the M best, and so on. Solutions that end (an answer, EOS, a budget) leave the beam
as finished candidates; the search stops when N have finished, none is left to expand, or the
step limit is reached. The answer is chosen among the finished ones (`selection`).
"""

from __future__ import annotations

import asyncio

from tts.engine import Backend
from tts.search.base import SearchResult
from tts.search.steps import BranchingConfig, StepSearch
from tts.search.tree import Node
from tts.verifiers import Scorer


class BeamConfig(BranchingConfig):
    """N = n candidates, M = beam_width."""


class Beam:
    def __init__(self, config: BeamConfig) -> None:
        self.config = config

    async def solve(
        self,
        problem: str,
        backend: Backend,
        scorer: Scorer | None = None,
        prompt: str | None = None,
    ) -> SearchResult:
        config = self.config
        search = StepSearch(config, problem, backend, scorer, prompt)
        frontier = await search.expand(search.tree.root, config.n)
        finished: list[Node] = []
        while True:
            await search.score(frontier)
            finished += [node for node in frontier if node.terminal]
            active = [node for node in frontier if not node.terminal]
            if not active or len(finished) >= config.n:
                break
            # sorted() is stable: among equal scores the earlier sample stays.
            kept = sorted(active, key=lambda node: -node.score)[: config.beam_width]
            width = config.n // config.beam_width
            expansions = await asyncio.gather(*(search.expand(node, width) for node in kept))
            frontier = [child for children in expansions for child in children]
        return search.result(finished or active)
