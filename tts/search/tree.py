"""The search tree of a tree strategy (beam, DVTS, MCTS), kept for inspection and export."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import networkx as nx


@dataclass
class Node:
    """One step of a partial solution: the step's text and what the search learnt of it.

    score: the reward model's score of the path ending here; value and visits: MCTS statistics
    (mean backed-up value, number of backups); logprob: the policy's log-probability of the
    step's sampled tokens (0 unless the search asked the backend for it). finish_reason, on a
    terminal node: "stop" when the solution ended by itself, "length" when a limit (tokens,
    steps, budget) ended it.
    """

    id: int
    parent: int | None
    text: str
    depth: int
    score: float | None = None
    visits: int = 0
    value: float = 0.0
    terminal: bool = False
    finish_reason: str | None = None
    tokens: int = 0
    logprob: float = 0.0
    children: list[int] = field(default_factory=list)


class SearchTree:
    """Nodes by id; node 0 is the root (the prompt, no text)."""

    def __init__(self) -> None:
        self.nodes = [Node(id=0, parent=None, text="", depth=0)]

    @property
    def root(self) -> Node:
        return self.nodes[0]

    def add(self, parent: Node, text: str, **fields: Any) -> Node:
        node = Node(
            id=len(self.nodes), parent=parent.id, text=text, depth=parent.depth + 1, **fields
        )
        self.nodes.append(node)
        parent.children.append(node.id)
        return node

    def path(self, node: Node) -> list[Node]:
        """The nodes from the root's child down to `node` (none for the root)."""
        path = []
        while node.parent is not None:
            path.append(node)
            node = self.nodes[node.parent]
        return path[::-1]

    def steps(self, node: Node) -> list[str]:
        """The texts from the root to `node`: the partial solution it stands for."""
        return [step.text for step in self.path(node)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: {"nodes": [{id, parent, text, depth, score, visits, value, ...}]}."""
        return {"nodes": [asdict(node) for node in self.nodes]}

    def to_networkx(self) -> nx.DiGraph:
        graph = nx.DiGraph()
        for node in self.nodes:
            attributes = asdict(node)
            del attributes["children"]
            graph.add_node(node.id, **attributes)
            if node.parent is not None:
                graph.add_edge(node.parent, node.id)
        return graph
