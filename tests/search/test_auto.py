"""auto on the table-driven test doubles of toy.py: a probe whose answer is well supported stands,
one that is not hands the rest of the budget to the hard strategy."""

from __future__ import annotations

import asyncio

import pytest

from tests.search.toy import ToyBackend, ToyScorer
from tts.errors import TTSError
from tts.search import make_strategy
from tts.search.auto import support
from tts.search.base import Candidate, SearchResult

SPLIT = {(): ["a \\boxed{1}", "b \\boxed{2}", "c \\boxed{3}", "d \\boxed{1}"]}


def solve(table, scores=None, **options):
    backend, scorer = ToyBackend(table), ToyScorer(scores or {})
    strategy = make_strategy("auto", seed=0, **options)
    return asyncio.run(strategy.solve("toy", backend, scorer)), backend, scorer


def test_a_well_supported_probe_answers_alone():
    result, backend, scorer = solve(
        {(): ["x \\boxed{1}"]}, {"x \\boxed{1}": 0.9}, n=16, probe=4, probe_with="best_of_n"
    )
    assert [params.n for _, params in backend.calls] == [4]  # support 0.9: easy
    assert result.answer == "1" and len(result.candidates) == 4
    assert scorer.calls == 4 and result.usage.completion_tokens == 4 * 2


def test_a_weakly_supported_probe_gets_the_rest_of_the_budget_from_the_hard_strategy():
    options = dict(n=16, probe=4, probe_with="majority", hard="best_of_n")
    result, backend, scorer = solve(SPLIT, {"c \\boxed{3}": 0.9}, **options)
    assert [params.n for _, params in backend.calls] == [4, 12]  # 2 of 4 agree: 0.25 < 0.4
    assert backend.calls[0][1].seed != backend.calls[1][1].seed  # the hard stage's own draws
    assert result.answer == "3"  # the hard stage's pick (the PRM's best), where the vote says 1
    assert len(result.candidates) == 16 and scorer.calls == 12
    assert result.usage.completion_tokens == 16 * 2


def test_when_both_stages_run_one_strategy_the_answer_is_chosen_among_all_their_candidates():
    scores = {"b \\boxed{2}": 0.95, "a \\boxed{1}": 0.3, "c \\boxed{3}": 0.3, "d \\boxed{1}": 0.3}
    options = dict(n=16, probe=4, probe_with="best_of_n", hard="best_of_n", confidence=0.5)
    result, _, _ = solve(SPLIT, scores, **options)
    assert result.answer == "2" and len(result.candidates) == 16
    weighted = dict(options, probe_options={"selection": "weighted"})
    weighted |= {"hard_options": {"selection": "weighted"}}
    result, _, _ = solve(SPLIT, scores, **weighted)
    # Summed over both stages' 16 candidates: 1 has 8 x 0.3 = 2.4, 2 has 4 x 0.95 = 3.8.
    assert result.answer == "2"
    scores["b \\boxed{2}"] = 0.5  # now 1 has 2.4 against 2's 2.0
    result, _, _ = solve(SPLIT, scores, **weighted)
    assert result.answer == "1"


def test_the_support_that_makes_a_problem_easy_is_an_option():
    options = dict(n=8, probe=4, probe_with="majority", hard="best_of_n")
    three = {(): ["a \\boxed{1}", "b \\boxed{2}", "c \\boxed{1}", "d \\boxed{1}"]}
    _, backend, _ = solve(three, confidence=0.5, **options)  # 3 of 4 agree: 0.75^2 = 0.5625
    assert [params.n for _, params in backend.calls] == [4]
    _, backend, _ = solve(three, confidence=0.6, **options)
    assert [params.n for _, params in backend.calls] == [4, 4]


def test_support_counts_the_candidates_behind_the_answer_by_their_scores():
    candidates = [Candidate("", "1", 0.8), Candidate("", "1.0", 0.6), Candidate("", "2", 0.9)]
    assert support(SearchResult("1", "", candidates)) == pytest.approx((0.8 + 0.6) / 3)
    unscored = [Candidate("", "1"), Candidate("", "2"), Candidate("", None), Candidate("", "1")]
    assert support(SearchResult("1", "", unscored)) == 0.5
    assert support(SearchResult(None, "", unscored)) == 0.0


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(n=4, probe=4), "probe"),
        (dict(hard="auto"), "its own hard"),
        (dict(probe_with="auto"), "its own probe"),
        (dict(hard="nope"), "unknown strategy"),
        (dict(n=16, hard="beam", hard_options={"beam_width": 5}), "multiple of beam_width"),
        (dict(probe=3, probe_with="beam", probe_options={"beam_width": 2}), "probe strategy"),
    ],
)
def test_a_bad_plan_is_refused_when_the_strategy_is_made(options, message):
    with pytest.raises(TTSError, match=message):
        make_strategy("auto", **options)


def test_the_default_stages_are_the_measured_best_fixed_strategy():
    config = make_strategy("auto", n=16).config
    probe, hard = config.probe_stage(), config.hard_stage()
    assert type(probe).__name__ == type(hard).__name__ == "ParticleFilter"
    assert (probe.config.n, hard.config.n) == (4, 12)
    assert probe.config.confidence_weight == hard.config.confidence_weight == 3.0
    bon = make_strategy("auto", n=16, hard="weighted_best_of_n").config.hard_stage()
    assert (bon.config.confidence_weight, bon.config.prm_weight) == (2.0, 2.0)
    # Tuned options are for their strategy alone: another starts from its own defaults.
    assert make_strategy("auto", n=16, hard="beam").config.hard_stage().config.n == 12
