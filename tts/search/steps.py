"""What step-level strategies share: growing a tree of partial solutions one step at a time.

A step is what the model writes up to the step delimiter (a blank line by default). Extending a
partial solution asks the backend to continue `prompt + steps so far` with `stop` at the
delimiter, so every extension shares its whole prefix with its parent and the backend's prefix
cache makes that prefix free. A step is terminal when the solution ends there: the model
stopped for good (EOS), the step holds a final answer, or the step count or token budget ran out;
a step cut at `max_step_tokens` simply continues in the next one. A step cut short of the tokens
it asked for (the context window is full, or the search's token budget is spent) ends its
solution too, since nothing could follow it. A solution that ended by itself finishes with
"stop", one that a limit ended with "length". The config's `stop` strings end a solution where
they would end one plain sample of it, even when one spans a step delimiter.
"""

from __future__ import annotations

import asyncio
import time

from pydantic import Field, model_validator

from tts.engine import Backend, Completion
from tts.engine.backend import truncate_at_stop
from tts.errors import TTSError
from tts.search.base import (
    Candidate,
    SearchResult,
    StrategyConfig,
    Usage,
    log_likelihood,
    pose,
)
from tts.search.select import Selection, select
from tts.search.tree import Node, SearchTree
from tts.seeds import derive_seed
from tts.verifiers import Aggregation, Scorer, aggregate, extract_answer, scorer_tokens


class StepConfig(StrategyConfig):
    """Options of the step-level strategies (beam, DVTS, MCTS)."""

    n: int = Field(16, ge=1, description="candidates in play: the compute budget N")
    step_delimiter: str = Field("\n\n", min_length=1, description="text that ends a step")
    max_steps: int = Field(40, ge=1, description="most steps in one solution")
    max_step_tokens: int = Field(256, ge=1, description="most tokens in one step")
    aggregation: Aggregation = Field(
        "last", description="per-step scores to one: last|min|prod|mean"
    )
    selection: Selection = Field("weighted", description="final pick: best|weighted|majority")


class BranchingConfig(StepConfig):
    """Beam search and DVTS: N candidates in groups of M."""

    beam_width: int = Field(4, ge=1, description="partial solutions kept / compared per node (M)")

    @model_validator(mode="after")
    def _width_divides_n(self) -> BranchingConfig:
        if self.n % self.beam_width:
            raise ValueError(f"n ({self.n}) must be a multiple of beam_width ({self.beam_width})")
        return self


class StepSearch:
    """One problem's search: the prompt, the tree, the usage, and the two moves every step-level
    strategy makes: expand a node into k sampled next steps, and score nodes with the PRM."""

    def __init__(
        self,
        config: StepConfig,
        problem: str,
        backend: Backend,
        scorer: Scorer | None,
        prompt: str | None = None,
        logprobs: bool = False,
    ) -> None:
        """logprobs: ask the backend for each step's sampled-token log-probabilities
        (`Node.logprob`)."""
        if scorer is None:
            raise TTSError("this strategy needs a process reward model (--prm)")
        self.config, self.problem, self.backend, self.scorer = config, problem, backend, scorer
        self.logprobs = logprobs
        self.prompt = pose(backend.tokenizer, problem, config.instruction, prompt)
        self.tree = SearchTree()
        self.usage = Usage()
        self.started = time.perf_counter()

    def path_tokens(self, node: Node) -> int:
        total = 0
        while node.parent is not None:
            total += node.tokens
            node = self.tree.nodes[node.parent]
        return total

    async def expand(self, node: Node, k: int) -> list[Node]:
        """Sample k next steps after `node` and add them to the tree as its children."""
        config = self.config
        steps = self.tree.steps(node)
        used = self.path_tokens(node)
        text = self.prompt + "".join(step + config.step_delimiter for step in steps)
        params = config.sampling_params(
            k,
            stop=(config.step_delimiter, *config.stop),
            max_tokens=max(min(config.max_step_tokens, config.max_tokens - used), 1),
            # The node's place in the tree, not the order searches run in, fixes its seed.
            seed=derive_seed(config.seed, *self._address(node), len(node.children)),
            logprobs=0 if self.logprobs else None,
        )
        completions = await self.backend.generate(text, params)
        self.usage.add(completions)
        children = []
        for completion in completions:
            tokens = len(completion.token_ids)
            # Ended for good (EOS, a stop token or a client's stop string), not cut at the
            # delimiter or the step limit.
            ended = self._stopped(steps, completion) or (
                completion.finish_reason == "stop"
                and completion.stop_reason != config.step_delimiter
            )
            blocked = completion.finish_reason == "abort" or (
                completion.finish_reason == "length" and tokens < params.max_tokens
            )
            cut = (
                blocked or node.depth + 1 >= config.max_steps or used + tokens >= config.max_tokens
            )
            solved = ended or extract_answer(completion.text) is not None
            finish = "stop" if solved else "length" if cut else None
            children.append(
                self.tree.add(
                    node,
                    completion.text,
                    tokens=tokens,
                    terminal=bool(finish),
                    finish_reason=finish,
                    logprob=log_likelihood(completion),
                )
            )
        return children

    def _stopped(self, steps: list[str], completion: Completion) -> bool:
        """Whether one of the config's stop strings ends the solution at this step, as it would
        end a plain sample: the backend cut the step at it, or it spans the delimiter between
        the steps before and this one (which no single step's generation sees whole)."""
        stop, delimiter = self.config.stop, self.config.step_delimiter
        if completion.stop_reason in stop:
            return True
        written = delimiter.join([*steps, completion.text])
        if completion.stop_reason == delimiter:
            written += delimiter
        return truncate_at_stop(written, tuple(stop))[1] is not None

    async def score(self, nodes: list[Node]) -> None:
        """Set each node's score: the aggregated PRM scores of the path ending at it."""
        paths = [self.tree.steps(node) for node in nodes]
        per_step = await asyncio.gather(*(self.scorer.score(self.problem, p) for p in paths))
        self.usage.scorer_calls += len(nodes)
        self.usage.scorer_tokens += sum(scorer_tokens(self.scorer, self.problem, p) for p in paths)
        for node, scores in zip(nodes, per_step):
            node.score = aggregate(scores, self.config.aggregation)

    def result(self, leaves: list[Node]) -> SearchResult:
        """The search's answer, chosen among the solutions ending at `leaves`."""
        candidates = []
        for leaf in leaves:
            steps = self.tree.steps(leaf)
            finish = leaf.finish_reason or "length"
            if steps and not steps[-1] and finish == "length":  # the budget was spent before it
                steps.pop()
            # A stop string that spans steps ends the text where a plain sample's would end.
            text, _ = truncate_at_stop(
                self.config.step_delimiter.join(steps), tuple(self.config.stop)
            )
            candidates.append(
                Candidate(text, extract_answer(text), leaf.score, self.path_tokens(leaf), finish)
            )
        chosen = select(candidates, self.config.selection)
        self.usage.seconds = time.perf_counter() - self.started
        return SearchResult(
            answer=chosen.answer if chosen else None,
            text=chosen.text if chosen else "",
            candidates=candidates,
            tree=self.tree.to_dict(),
            usage=self.usage,
        )

    def _address(self, node: Node) -> list[int]:
        """Child positions from the root down to `node`."""
        address = []
        while node.parent is not None:
            parent = self.tree.nodes[node.parent]
            address.append(parent.children.index(node.id))
            node = parent
        return address[::-1]
