"""adaptive_majority on a backend whose answers are scripted wave by wave, where the stopping
criterion's decision after each wave is known."""

from __future__ import annotations

import asyncio
import math
from types import SimpleNamespace

import pytest

from tts.engine import Completion, SamplingParams
from tts.search import make_strategy
from tts.search.adaptive_majority import leader_probability


class Waves:
    """Call i answers with the boxed answers of `waves[i]`, one token per sample."""

    tokenizer = SimpleNamespace(chat_template=None)

    def __init__(self, waves: list[list[str]]) -> None:
        self.waves = waves
        self.calls: list[SamplingParams] = []

    async def generate(self, prompt: str, params: SamplingParams) -> list[Completion]:
        answers = self.waves[len(self.calls)]
        self.calls.append(params)
        assert len(answers) == params.n
        return [Completion(f"\\boxed{{{a}}}", [0], "stop") for a in answers]


def beta_tail(a: int, b: int, steps: int = 100_000) -> float:
    """P(p > 1/2) for p ~ Beta(a, b), by the midpoint rule over the density."""
    log_norm = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    width = 0.5 / steps
    points = (0.5 + (i + 0.5) * width for i in range(steps))
    return (
        sum(math.exp(log_norm + (a - 1) * math.log(x) + (b - 1) * math.log1p(-x)) for x in points)
        * width
    )


@pytest.mark.parametrize("v1, v2", [(0, 0), (3, 0), (4, 0), (5, 1), (10, 6), (30, 25)])
def test_leader_probability_is_the_beta_tail(v1, v2):
    assert leader_probability(v1, v2) == pytest.approx(beta_tail(v1 + 1, v2 + 1), abs=1e-6)


def solve(waves: list[list[str]], **options) -> tuple:
    backend = Waves(waves)
    strategy = make_strategy("adaptive_majority", seed=0, **options)
    return asyncio.run(strategy.solve("toy", backend)), backend


def test_it_stops_at_the_wave_the_criterion_says():
    # After wave 1 the votes are 3:1, P = 0.81; after wave 2 they are 7:1, P = 0.98 >= 0.95.
    waves = [["1", "2", "1", "1"], ["1", "1", "1", "1"], ["2"] * 4]
    result, backend = solve(waves, n=12, wave=4)
    assert len(backend.calls) == 2 and len(result.candidates) == 8
    assert result.answer == "1" and result.usage.completion_tokens == 8
    assert len({params.seed for params in backend.calls}) == 2  # each wave draws afresh


def test_an_unsettled_vote_samples_up_to_n():
    waves = [["1", "2"], ["1", "2"], ["2", "1"]]
    result, backend = solve(waves, n=6, wave=2)
    assert len(backend.calls) == 3 and len(result.candidates) == 6
    assert result.answer == "1"  # a 3:3 tie goes to the answer seen first


def test_a_higher_threshold_waits_for_more_evidence():
    waves = [["1"] * 4, ["1"] * 4]
    assert len(solve(waves, n=8, wave=4)[1].calls) == 1  # 4:0 gives 0.969
    assert len(solve(waves, n=8, wave=4, threshold=0.99)[1].calls) == 2  # 8:0 gives 0.998
