"""DeepConf (Fu et al., 2025, "Deep Think with Confidence"): vote with the traces the model was
sure of, and stop writing the ones it is not.

A token's confidence is -1/k sum_j log P(j) over the k most likely tokens at its position (their
eq. 2: high where the distribution is peaked). A trace's confidence reads these per token:
- `lowest_group`: the lowest mean over any `window` consecutive tokens (eq. 4 and 5), a trace
  judged by its shakiest stretch (the whole trace when it is shorter than the window);
- `bottom_group`: the mean of the lowest 10% of those window means;
- `tail`: the mean over its last `window` tokens (eq. 7), where the answer is written;
- `mean`: the mean over all its tokens.

Offline: sample n traces, keep the most confident `keep` share (DeepConf-low keeps 10%,
DeepConf-high 90%) and answer by confidence-weighted majority vote (each kept trace votes with
its confidence). Online (their Algorithm 2): `warmup` traces set the threshold, the confidence
that the `keep` share of them reach; every later trace is aborted the moment the mean of its last
`window` tokens falls below it (the engine frees its KV cache at once), and sampling stops when
the leading answer holds `consensus` of the weighted vote, or at n traces. The vote takes the
warm-up traces at or above the threshold and the later traces that finished. Online mode needs a
backend that streams (the native engine); elsewhere each trace is written whole and then judged
by the same rule, so the answer is the same and only the tokens saved are lost.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

from pydantic import Field

from tts.engine import Backend, Completion, SamplingParams
from tts.search.base import Candidate, SearchResult, StrategyConfig, Usage, pose
from tts.search.select import select, vote
from tts.seeds import derive_seed
from tts.verifiers import Scorer, extract_answer

Confidence = Literal["lowest_group", "bottom_group", "tail", "mean"]


class DeepConfConfig(StrategyConfig):
    n: int = Field(64, ge=1, description="most traces sampled")
    mode: Literal["offline", "online"] = Field(
        "online", description="filter finished traces, or abort unconfident ones as they grow"
    )
    confidence: Confidence = Field(
        "lowest_group", description="a trace's confidence: lowest_group|bottom_group|tail|mean"
    )
    window: int = Field(2048, ge=1, description="tokens per group (and of the tail)")
    top_logprobs: int = Field(
        20, ge=1, le=20, description="k: a token's confidence reads the k most likely tokens"
    )
    keep: float = Field(
        0.1, gt=0, le=1, description="share of traces kept: 0.1 is DeepConf-low, 0.9 -high"
    )
    warmup: int = Field(16, ge=1, description="online: traces that set the threshold")
    consensus: float = Field(
        0.95, gt=0.5, le=1, description="online: stop once the leader holds this vote share"
    )
    concurrency: int = Field(16, ge=1, description="online: traces written at once")


def token_confidences(logprobs: list[dict[int, float]], k: int) -> list[float]:
    """Each token's confidence: minus the mean of the k largest log-probabilities at its place."""
    return [-sum(sorted(entry.values(), reverse=True)[:k]) / k for entry in logprobs]


def group_means(values: Sequence[float], window: int) -> list[float]:
    """The mean of every run of `window` consecutive values (one, of all, when fewer)."""
    if len(values) <= window:
        return [sum(values) / len(values)] if values else []
    total, means = sum(values[:window]), []
    means.append(total / window)
    for i in range(window, len(values)):
        total += values[i] - values[i - window]
        means.append(total / window)
    return means


def trace_confidence(confidences: Sequence[float], how: Confidence, window: int) -> float:
    """One number for a trace from its tokens' confidences (see the module's list)."""
    if not confidences:
        return -math.inf
    if how == "mean":
        return sum(confidences) / len(confidences)
    if how == "tail":
        tail = confidences[-window:]
        return sum(tail) / len(tail)
    groups = group_means(confidences, window)
    if how == "lowest_group":
        return min(groups)
    bottom = sorted(groups)[: max(1, math.ceil(len(groups) / 10))]
    return sum(bottom) / len(bottom)


def threshold_of(confidences: list[float], keep: float) -> float:
    """The confidence the most confident `keep` share of traces reach (at least one trace)."""
    ranked = sorted(confidences, reverse=True)
    return ranked[max(1, math.ceil(keep * len(ranked))) - 1]


class DeepConf:
    def __init__(self, config: DeepConfConfig) -> None:
        self.config = config

    async def solve(
        self,
        problem: str,
        backend: Backend,
        scorer: Scorer | None = None,
        prompt: str | None = None,
    ) -> SearchResult:
        config = self.config
        run = _Run(config, backend, pose(backend.tokenizer, problem, config.instruction, prompt))
        warmup = config.n if config.mode == "offline" else min(config.warmup, config.n)
        traces = list(await asyncio.gather(*(run.trace(i) for i in range(warmup))))
        threshold = threshold_of([t.confidence for t in traces], config.keep)
        for trace in traces:
            trace.kept = trace.confidence >= threshold
        if warmup < config.n:
            traces += await run.online(traces, threshold)
        candidates = [
            Candidate(
                t.completion.text, t.answer, t.confidence if t.kept else 0.0, t.tokens, t.finish
            )
            for t in traces
        ]
        chosen = select([c for c, t in zip(candidates, traces) if t.kept], "weighted")
        run.usage.seconds = time.perf_counter() - run.started
        return SearchResult(chosen.answer, chosen.text, candidates, usage=run.usage)


@dataclass
class _Trace:
    """One sampled trace: its completion (partial when aborted), confidence and fate."""

    index: int
    completion: Completion
    confidence: float
    kept: bool

    @cached_property
    def answer(self) -> str | None:
        return extract_answer(self.completion.text) if self.completion.finish_reason else None

    @property
    def tokens(self) -> int:
        return len(self.completion.token_ids)

    @property
    def finish(self) -> str:
        return self.completion.finish_reason or "abort"


class _Run:
    """One problem's traces: sampling them, aborting them, counting what they spent."""

    def __init__(self, config: DeepConfConfig, backend: Backend, prompt: str) -> None:
        self.config, self.backend, self.prompt = config, backend, prompt
        self.usage = Usage()
        self.started = time.perf_counter()
        self.settled = False  # online: the vote is settled; traces still growing stop

    async def trace(self, index: int, threshold: float | None = None) -> _Trace:
        """Trace `index` (its seed derives from it), cut off when a window of it falls below
        `threshold` (None: never) or the vote settles while it grows."""
        config = self.config
        params = config.sampling_params(
            1, logprobs=config.top_logprobs, seed=derive_seed(config.seed, index)
        )
        stream = getattr(self.backend, "stream", None)
        if threshold is None or stream is None:
            completion = (await self.backend.generate(self.prompt, params))[0]
            confidences = token_confidences(completion.logprobs or [], config.top_logprobs)
        else:
            completion, confidences = await self._watch(stream, params, threshold)
        self.usage.add([completion])
        confidence = trace_confidence(confidences, config.confidence, config.window)
        below = threshold is not None and self._falls_below(confidences, threshold)
        finished = completion.finish_reason is not None
        return _Trace(index, completion, confidence, kept=finished and not below)

    async def _watch(
        self,
        stream: Callable[..., AsyncIterator[list[Completion]]],
        params: SamplingParams,
        threshold: float,
    ) -> tuple[Completion, list[float]]:
        """Stream one trace; closing the stream aborts it (the engine frees its KV cache at
        once), which happens the moment a window falls below `threshold` or the vote settles."""
        window = self.config.window
        confidences: list[float] = []
        async with aclosing(stream(self.prompt, params)) as snapshots:
            async for (completion,) in snapshots:
                new = (completion.logprobs or [])[len(confidences) :]
                confidences += token_confidences(new, self.config.top_logprobs)
                recent = confidences[-window - len(new) + 1 :]
                if self.settled or self._falls_below(recent, threshold):
                    break
        return completion, confidences

    def _falls_below(self, confidences: Sequence[float], threshold: float) -> bool:
        """Whether some full window of these confidences has a mean below `threshold`."""
        window = self.config.window
        return len(confidences) >= window and min(group_means(confidences, window)) < threshold

    async def online(self, warmup: list[_Trace], threshold: float) -> list[_Trace]:
        """The traces after the warm-up, `concurrency` at once, until the weighted vote of the
        kept ones settles or n are sampled; returned in index order."""
        config = self.config
        done: list[_Trace] = []
        next_index, in_flight = len(warmup), set()
        try:
            while next_index < config.n or in_flight:
                while len(in_flight) < config.concurrency and next_index < config.n:
                    in_flight.add(asyncio.ensure_future(self.trace(next_index, threshold)))
                    next_index += 1
                finished, in_flight = await asyncio.wait(
                    in_flight, return_when=asyncio.FIRST_COMPLETED
                )
                done += [task.result() for task in finished]
                if self._leader_share(warmup + done) >= config.consensus:
                    self.settled = True  # the traces still growing stop at their next token
                    break
            done += await asyncio.gather(*in_flight)
        finally:
            for task in in_flight:  # an error (or a cancelled search) leaves none running
                task.cancel()
        return sorted(done, key=lambda trace: trace.index)

    @staticmethod
    def _leader_share(traces: list[_Trace]) -> float:
        """The leading answer's share of the confidence-weighted vote of the kept traces."""
        kept = [t for t in traces if t.kept and t.answer is not None]
        clusters = vote([t.answer for t in kept])
        weights = [sum(kept[i].confidence for i in cluster) for cluster in clusters]
        return max(weights) / sum(weights) if weights else 0.0
