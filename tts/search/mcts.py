"""Monte Carlo tree search over reasoning steps, guided by a process reward model.

AlphaZero's PUCT search (Silver et al., 2017, "Mastering Chess and Shogi by Self-Play with a
General Reinforcement Learning Algorithm") with steps sampled by the model as actions and the PRM
as value, as in rStar (Qi et al., 2024, "Mutual Reasoning Makes Smaller LLMs Stronger
Problem-Solvers": rollouts to a finished solution) and ReST-MCTS* (Zhang et al., 2024, "LLM
Self-Training via Process Reward Guided Tree Search": the partial solution's process reward as
value). Each simulation:

- selects from the root the child maximising PUCT, Q + c_puct * P * sqrt(N) / (1 + n): n the
  child's visits, N the visits of all the parent's children (AlphaZero's sum_b N(s, b)), P = 1/K
  uniform over the K siblings (sampled steps have no better prior than their sampling), and Q the
  mean backed-up value, or for an unvisited child its own PRM score (a first-play value that is
  already there, so a new step is judged on its merit before any visit);
- stops at a node no simulation has reached yet (it is evaluated), or at a terminal node (its
  known score is backed up again); a node reached before but not fully expanded is expanded
  first: `expand_k` sampled next steps, scored by the PRM, then PUCT picks one of the new ones;
- evaluates the node it stopped at: "prm" takes its PRM score; "rollout" samples one step at a
  time down to a terminal step (these steps join the tree, one child each, and are widened to
  `expand_k` when a later simulation comes back) and takes the finished solution's score;
- backs the value up the path: visits += 1 and value = running mean on every node of it.

So a node's visits are its children's visits plus the simulations that ended at it, and its value
the mean of their values. Concurrent simulations each add `virtual_loss` visits of value 0 to
their path until they back up, so they spread over branches; a node is never expanded by two at
once. Candidates are all terminal nodes, chosen by `selection`.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter, defaultdict
from typing import Literal

from pydantic import Field

from tts.engine import Backend
from tts.search.base import SearchResult
from tts.search.steps import StepConfig, StepSearch
from tts.search.tree import Node
from tts.verifiers import Scorer


class MCTSConfig(StepConfig):
    """Options of MCTS. By default it runs n simulations: in rollout mode each ends at a finished
    solution, so about n candidates, as best-of-n; in prm mode they sample n * expand_k steps."""

    simulations: int | None = Field(None, ge=1, description="simulations run; None means n")
    expand_k: int = Field(4, ge=1, description="next steps sampled when a node is expanded")
    c_puct: float = Field(1.0, ge=0, description="PUCT exploration constant; 0 is greedy on Q")
    value: Literal["prm", "rollout"] = Field(
        "rollout", description="a new node's value: its PRM score, or a rollout's final score"
    )
    concurrency: int = Field(4, ge=1, description="simulations in flight at once")
    virtual_loss: int = Field(
        1, ge=0, le=1000, description="visits of value 0 per in-flight simulation"
    )


class MCTS:
    """Monte Carlo tree search with PUCT selection over PRM-scored steps."""

    def __init__(self, config: MCTSConfig) -> None:
        self.config = config

    async def solve(
        self,
        problem: str,
        backend: Backend,
        scorer: Scorer | None = None,
        prompt: str | None = None,
    ) -> SearchResult:
        search = _Search(self.config, problem, backend, scorer, prompt)
        slots = asyncio.Semaphore(self.config.concurrency)

        async def simulation() -> None:
            async with slots:
                await search.simulate()

        await asyncio.gather(
            *(simulation() for _ in range(self.config.simulations or self.config.n))
        )
        return search.answer()


class _Search(StepSearch):
    """One problem's tree, with the simulations in flight on each node (for virtual loss)."""

    config: MCTSConfig

    def __init__(
        self,
        config: MCTSConfig,
        problem: str,
        backend: Backend,
        scorer: Scorer | None,
        prompt: str | None = None,
    ) -> None:
        super().__init__(config, problem, backend, scorer, prompt)
        self.in_flight: Counter[int] = Counter()  # node id -> simulations whose path holds it
        self.locks: defaultdict[int, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def simulate(self) -> None:
        """Select, expand, evaluate and back up once."""
        node = self.tree.root
        path = [node]
        self.in_flight[node.id] += 1
        # Descend through nodes evaluated before: the first new one is the one to evaluate.
        while not node.terminal and (node.visits > 0 or node.parent is None):
            new = await self._grow(node, self.config.expand_k)
            # No new children: the node was expanded before, or by another simulation just now.
            node = self._descend(node, new or self._children(node), path)
        while self.config.value == "rollout" and not node.terminal:
            await self._grow(node, 1, score=False)  # the PRM judges the finished solution only
            node = self._descend(node, self._children(node), path)
        if node.score is None:
            await self.score([node])
        for visited in path:
            self.in_flight[visited.id] -= 1
            visited.visits += 1
            visited.value += (node.score - visited.value) / visited.visits

    async def _grow(self, node: Node, width: int, score: bool = True) -> list[Node]:
        """Sample children until `node` has `width`; return the new ones."""
        # A second simulation that selects a node being expanded waits here, then finds the
        # children already there, so no node is expanded twice.
        async with self.locks[node.id]:
            if len(node.children) >= width:
                return []
            children = await self.expand(node, width - len(node.children))
            if score:
                await self.score(children)
            return children

    def _descend(self, parent: Node, children: list[Node], path: list[Node]) -> Node:
        """Add to `path` the child with the highest PUCT (ties: the first), counting in-flight
        simulations as `virtual_loss` visits of value 0 each."""

        def visits(node: Node) -> int:
            return node.visits + self.config.virtual_loss * self.in_flight[node.id]

        prior = 1 / len(parent.children)  # uniform: a sampled step has no better prior
        explore = self.config.c_puct * prior * math.sqrt(sum(map(visits, self._children(parent))))

        def puct(child: Node) -> float:
            n = visits(child)
            q = child.value * child.visits / n if n else child.score or 0.0
            return q + explore / (1 + n)

        child = max(children, key=puct)
        path.append(child)
        self.in_flight[child.id] += 1
        return child

    def _children(self, node: Node) -> list[Node]:
        return [self.tree.nodes[i] for i in node.children]

    def answer(self) -> SearchResult:
        """The choice among every terminal node; without one, the most visited path."""
        finished = [node for node in self.tree.nodes if node.terminal]
        if finished:
            return self.result(finished)
        node = self.tree.root
        while node.children:
            node = max(self._children(node), key=lambda child: child.visits)
        return self.result([node])
