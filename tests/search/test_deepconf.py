"""deepconf: the confidence measures on known numbers, offline filtering and online aborting on
a scripted streaming backend whose traces' confidences are set by hand, and online aborting on
the native engine, where an aborted trace's KV blocks must come back to the pool."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from tts.engine import Completion, SamplingParams, load
from tts.search import make_strategy
from tts.search.deepconf import group_means, threshold_of, token_confidences, trace_confidence

SURE = {0: -0.1, 1: -3.9}  # confidence 2.0 with k = 2
UNSURE = {0: -0.7, 1: -0.7}  # confidence 0.7


def test_token_confidence_is_minus_the_mean_top_k_logprob():
    assert token_confidences([SURE, UNSURE], k=2) == pytest.approx([2.0, 0.7])
    # The sampled token's own entry beyond the k best is left out.
    assert token_confidences([{0: -0.1, 1: -3.9, 2: -9.0}], k=2) == pytest.approx([2.0])


def test_trace_confidences():
    values = [3.0, 3.0, 1.0, 1.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0]
    assert group_means(values, 2) == [3.0, 2.0, 1.0, 2.0, 3.0, 3.0, 3.0, 3.0, 3.0]
    assert group_means([1.0, 2.0], 5) == [1.5]  # shorter than a window: one group of all
    assert trace_confidence(values, "lowest_group", 2) == 1.0
    assert trace_confidence(values, "bottom_group", 2) == 1.0  # the lowest 10% of 9 groups
    assert trace_confidence(values, "tail", 3) == 3.0
    assert trace_confidence(values, "mean", 3) == pytest.approx(2.6)
    assert threshold_of([5.0, 1.0, 3.0, 2.0], keep=0.5) == 3.0
    assert threshold_of([5.0, 1.0], keep=0.1) == 5.0  # at least one trace is kept


class Traces:
    """Trace i (in call order) writes `traces[i]`: (answer, per-token logprob dicts). It streams
    token by token and records how many tokens each stream delivered before it was closed."""

    tokenizer = SimpleNamespace(chat_template=None)

    def __init__(self, traces: list[tuple[str, list[dict[int, float]]]]) -> None:
        self.traces = traces
        self.started = 0
        self.delivered: dict[int, int] = {}

    def _next(self, params: SamplingParams) -> tuple[int, str, list[dict[int, float]]]:
        assert params.n == 1 and params.logprobs == 2
        index, self.started = self.started, self.started + 1
        return index, *self.traces[index]

    async def generate(self, prompt: str, params: SamplingParams) -> list[Completion]:
        index, answer, logprobs = self._next(params)
        self.delivered[index] = len(logprobs)
        return [self._completion(answer, logprobs, "stop")]

    async def stream(self, prompt: str, params: SamplingParams):
        index, answer, logprobs = self._next(params)
        for count in range(1, len(logprobs) + 1):
            self.delivered[index] = count
            await asyncio.sleep(0)
            done = count == len(logprobs)
            yield [self._completion(answer, logprobs[:count], "stop" if done else None)]

    @staticmethod
    def _completion(answer: str, logprobs: list, finish: str | None) -> Completion:
        text = f"\\boxed{{{answer}}}" if finish else ""
        return Completion(text, list(range(len(logprobs))), finish, logprobs=logprobs)


OPTIONS = dict(top_logprobs=2, window=2, seed=0)


def test_offline_keeps_the_confident_share_and_weights_the_vote():
    traces = [("1", [SURE] * 4)] + [("2", [UNSURE] * 4)] * 3
    backend = Traces(traces)
    strategy = make_strategy("deepconf", mode="offline", n=4, keep=0.25, **OPTIONS)
    result = asyncio.run(strategy.solve("toy", backend))
    assert result.answer == "1"  # a plain vote says 2, three to one
    assert [c.score for c in result.candidates] == pytest.approx([2.0, 0.0, 0.0, 0.0])
    assert [c.answer for c in result.candidates] == ["1", "2", "2", "2"]  # all still graded


def test_online_aborts_the_trace_whose_confidence_falls_below_the_warmup_threshold():
    traces = [
        ("1", [SURE] * 6),  # warm-up: sets the threshold (keep 0.5: the better of the two)
        ("2", [UNSURE] * 6),  # warm-up, below the threshold: it does not vote
        ("2", [SURE] * 6),  # kept: the vote is 1:1, not settled
        ("3", [SURE] * 2 + [UNSURE] * 4),  # its window of tokens 2-3 is below: aborted at 3
    ]
    backend = Traces(traces)
    strategy = make_strategy(
        "deepconf", mode="online", n=4, warmup=2, keep=0.5, concurrency=1, **OPTIONS
    )
    result = asyncio.run(strategy.solve("toy", backend))
    assert [c.finish_reason for c in result.candidates] == ["stop", "stop", "stop", "abort"]
    assert backend.delivered == {0: 6, 1: 6, 2: 6, 3: 3}
    assert result.usage.completion_tokens == 21
    assert result.answer == "1"  # 1 and 2 weigh the same: the first seen wins
    assert result.candidates[3].answer is None


def test_online_stops_sampling_once_the_weighted_vote_is_settled():
    traces = [("1", [SURE] * 3)] * 2 + [("1", [SURE] * 3)] * 6
    backend = Traces(traces)
    strategy = make_strategy("deepconf", n=8, warmup=2, keep=0.5, concurrency=1, **OPTIONS)
    result = asyncio.run(strategy.solve("toy", backend))
    assert backend.started == 3 and len(result.candidates) == 3  # settled after one more


def test_online_without_a_stream_judges_whole_traces_by_the_same_rule():
    traces = [("1", [SURE] * 6), ("2", [UNSURE] * 6), ("2", [SURE] * 6)]
    traces.append(("3", [SURE] * 2 + [UNSURE] * 4))
    backend = Traces(traces)
    backend.stream = None  # a backend that cannot stream
    strategy = make_strategy("deepconf", n=4, warmup=2, keep=0.5, concurrency=1, **OPTIONS)
    result = asyncio.run(strategy.solve("toy", backend))
    assert [c.finish_reason for c in result.candidates] == ["stop"] * 4
    assert [c.score > 0 for c in result.candidates] == [True, False, True, False]
    assert result.usage.completion_tokens == 24  # written whole: nothing saved


def test_online_aborts_free_their_kv_blocks_on_the_native_engine(tiny_llama):
    engine = load(tiny_llama, backend="native", device="cpu", block_size=4, num_blocks=512)
    strategy = make_strategy(
        "deepconf",
        n=12,
        warmup=4,
        keep=0.25,
        window=4,
        top_logprobs=5,
        max_tokens=32,
        temperature=1.0,
        seed=0,
        concurrency=4,
    )
    result = asyncio.run(strategy.solve("What is 2+2?", engine))
    aborted = [c for c in result.candidates if c.finish_reason == "abort"]
    assert aborted and all(c.tokens < 32 for c in aborted)
    assert result.usage.completion_tokens == sum(c.tokens for c in result.candidates)
    assert engine.stats()["blocks_in_use"] == 0
