"""Diverse verifier tree search (DVTS), from Hugging Face's "Scaling test-time compute with open
models" (Beeching, Tunstall and Rush, 2024).

Beam search at large N lets a few strong prefixes crowd out the rest. DVTS splits the budget N
into N/M independent subtrees, one per first step, and searches each greedily: expand the current
node into M next steps, let the PRM pick the best, repeat until the solution ends. The N/M
finished solutions are the candidates, chosen between by `selection`.
"""

from __future__ import annotations

import asyncio

from tts.engine import Backend
from tts.search.base import SearchResult
from tts.search.steps import BranchingConfig, StepSearch
from tts.search.tree import Node
from tts.verifiers import Scorer


class DVTSConfig(BranchingConfig):
    """N = n candidates, M = beam_width."""


class DVTS:
    def __init__(self, config: DVTSConfig) -> None:
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
        firsts = await search.expand(search.tree.root, config.n // config.beam_width)
        await search.score(firsts)

        async def descend(node: Node) -> Node:
            while not node.terminal:
                children = await search.expand(node, config.beam_width)
                await search.score(children)
                node = max(children, key=lambda child: child.score)  # ties: the first sample
            return node

        leaves = await asyncio.gather(*(descend(node) for node in firsts))
        return search.result(list(leaves))
