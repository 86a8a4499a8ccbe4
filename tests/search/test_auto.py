"""auto on the table-driven test doubles of toy.py: a probe that agrees is answered by voting,
one that does not hands the rest of the budget to the hard strategy."""

from __future__ import annotations

import asyncio

import pytest

from tests.search.toy import ToyBackend, ToyScorer
from tts.errors import TTSError
from tts.search import make_strategy


def solve(table, scores=None, **options):
    backend, scorer = ToyBackend(table), ToyScorer(scores or {})
    strategy = make_strategy("auto", seed=0, **options)
    return asyncio.run(strategy.solve("toy", backend, scorer)), backend, scorer


def test_an_easy_problem_is_voted_on_and_stops_once_settled():
    result, backend, scorer = solve({(): ["x \\boxed{1}"]}, n=16, probe=4)
    assert [params.n for _, params in backend.calls] == [4]  # 4 of 4 agree: settled
    assert result.answer == "1" and len(result.candidates) == 4
    assert scorer.calls == 0


def test_a_hard_problem_gets_the_rest_of_the_budget_from_the_hard_strategy():
    table = {(): ["a \\boxed{1}", "b \\boxed{2}", "c \\boxed{3}", "d \\boxed{1}"]}
    result, backend, scorer = solve(table, {"c \\boxed{3}": 0.9}, n=16, probe=4, hard="best_of_n")
    assert [params.n for _, params in backend.calls] == [4, 12]  # 2 of 4 agree: hard
    assert result.answer == "3"  # the PRM's pick, where the vote says 1
    assert len(result.candidates) == 16 and scorer.calls == 12
    assert result.usage.completion_tokens == 16 * 2


def test_the_agreement_that_makes_a_problem_easy_is_an_option():
    table = {(): ["a \\boxed{1}", "b \\boxed{2}", "c \\boxed{1}", "d \\boxed{1}"]}
    easy, backend, scorer = solve(table, n=8, probe=4, agreement=0.75, hard="best_of_n")
    assert [params.n for _, params in backend.calls] == [4, 4]  # 3:1 is not settled: a wave
    assert easy.answer == "1" and scorer.calls == 0
    _, backend, scorer = solve(table, n=8, probe=4, agreement=1.0, hard="best_of_n")
    assert [params.n for _, params in backend.calls] == [4, 4] and scorer.calls == 4  # hard


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(n=4, probe=4), "probe"),
        (dict(hard="auto"), "its own"),
        (dict(hard="nope"), "unknown strategy"),
        (dict(n=16, hard="beam", hard_options={"beam_width": 5}), "multiple of beam_width"),
    ],
)
def test_a_bad_plan_is_refused_when_the_strategy_is_made(options, message):
    with pytest.raises(TTSError, match=message):
        make_strategy("auto", **options)


def test_the_default_hard_strategy_is_the_measured_best_fixed_one():
    hard = make_strategy("auto", n=16).config.hard_strategy()
    assert type(hard).__name__ == "ParticleFilter"
    assert hard.config.n == 12 and hard.config.confidence_weight == 3.0
    bon = make_strategy("auto", n=16, hard="weighted_best_of_n").config.hard_strategy()
    assert (bon.config.confidence_weight, bon.config.prm_weight) == (2.0, 2.0)
    # Tuned options are for their strategy alone: another starts from its own defaults.
    assert make_strategy("auto", n=16, hard="beam").config.hard_strategy().config.n == 12
