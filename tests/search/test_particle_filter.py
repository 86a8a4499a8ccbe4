"""particle_filter on the table-driven test doubles of toy.py: weights, systematic resampling,
and a search where the high-weight particle must take over."""

from __future__ import annotations

import asyncio
import math
import random
from collections import Counter

import pytest

from tests.search.toy import RootByFilter, ToyBackend, ToyScorer
from tts.errors import TTSError
from tts.search import make_strategy
from tts.search.particle_filter import particle_weights, systematic_resample


def test_weights_are_a_softmax_of_the_scores_log_odds():
    weights = particle_weights([0.9, 0.5, 0.1], temperature=1.0)
    # logit 0.9 = ln 9: the odds 9 : 1 : 1/9, normalised.
    assert weights == pytest.approx([81 / 91, 9 / 91, 1 / 91])
    assert particle_weights([0.9, 0.5], temperature=1e-3)[0] == pytest.approx(1.0)
    assert particle_weights([0.9, 0.5], temperature=1e3) == pytest.approx([0.5, 0.5], abs=1e-2)


@pytest.mark.parametrize("seed", range(20))
def test_systematic_resampling_gives_each_particle_floor_or_ceil_of_n_times_its_weight(seed):
    weights = [0.55, 0.3, 0.1, 0.05]
    copies = Counter(systematic_resample(weights, 8, random.Random(seed)))
    for index, weight in enumerate(weights):
        assert int(8 * weight) <= copies[index] <= int(8 * weight) + 1
    assert sum(copies.values()) == 8


TABLE = {
    (): ["good", "bad"],
    ("good",): ["sure \\boxed{1}"],
    ("bad",): ["wrong \\boxed{2}"],
}


def test_resampling_keeps_the_high_weight_particle():
    backend, scorer = ToyBackend(TABLE), ToyScorer({"good": 0.99, "bad": 0.01})
    strategy = make_strategy("particle_filter", n=2, seed=0)
    result = asyncio.run(strategy.solve("toy", backend, scorer))
    # Both particles descend from "good": one call extends it twice; "bad" is never extended.
    assert [(steps, params.n) for steps, params in backend.calls] == [((), 2), (("good",), 2)]
    assert [c.answer for c in result.candidates] == ["1", "1"] and result.answer == "1"
    assert result.usage.scorer_calls == 4


@pytest.mark.parametrize("confidence_weight", [0.0, 1.0])
def test_the_policys_likelihood_drops_the_particle_whose_step_it_found_unlikely(confidence_weight):
    """The PRM cannot tell the steps apart (0.5 each); the policy wrote "slip" at log-prob -5."""
    table = {
        (): ["sure", "slip"],
        ("sure",): ["right \\boxed{1}"],
        ("slip",): ["wrong \\boxed{2}"],
    }
    backend = ToyBackend(table, likelihoods={"sure": -0.1, "slip": -5.0})
    strategy = make_strategy("particle_filter", n=2, seed=0, confidence_weight=confidence_weight)
    result = asyncio.run(strategy.solve("toy", backend, ToyScorer({})))
    answers = sorted(c.answer for c in result.candidates)
    # Weights e^-0.1 : e^-5 give "slip" 0.007 of the draw: systematic resampling drops it.
    assert answers == (["1", "1"] if confidence_weight else ["1", "2"])
    assert all(
        (params.logprobs is not None) == bool(confidence_weight) for _, params in backend.calls
    )
    assert particle_weights([0.5, 0.5], 1.0, [-0.1, -5.0], 1.0)[1] == pytest.approx(
        1 / (1 + math.exp(4.9))
    )


def test_a_finished_particle_stays_in_the_draw_with_its_weight():
    table = {(): ["done \\boxed{3}", "step"], ("step",): ["end \\boxed{4}"]}
    scores = {"done \\boxed{3}": 0.99, "step": 0.01}
    result = asyncio.run(
        make_strategy("particle_filter", n=4, seed=0).solve(
            "toy", ToyBackend(table), ToyScorer(scores)
        )
    )
    # The finished solution takes every copy: nothing is left to extend.
    assert [c.answer for c in result.candidates] == ["3"] * 4


def test_particle_filter_needs_a_scorer():
    with pytest.raises(Exception, match="process reward model"):
        asyncio.run(make_strategy("particle_filter", n=2).solve("toy", ToyBackend(TABLE)))


def test_independent_filters_each_draw_only_among_their_own_particles():
    # The first filter finds only "bad", the second only "good". One draw over all four
    # particles would drop "bad"; as two filters, each keeps its own line to the end.
    leaves = {("good",): ["sure \\boxed{1}"], ("bad",): ["wrong \\boxed{2}"]}
    backend = RootByFilter(leaves, [["bad"], ["good"]])
    scorer = ToyScorer({"good": 0.99, "bad": 0.01, "sure \\boxed{1}": 0.9, "wrong \\boxed{2}": 0.1})
    result = asyncio.run(
        make_strategy("particle_filter", n=4, filters=2, seed=0).solve("toy", backend, scorer)
    )
    assert [(steps, params.n) for steps, params in backend.calls] == [
        ((), 2),  # filter 1: two particles, both "bad"
        (("bad",), 1),
        (("bad",), 1),
        ((), 2),  # filter 2: two particles, both "good"
        (("good",), 1),
        (("good",), 1),
    ]
    # The second filter's first steps are new children of the root, with their own seed.
    assert backend.calls[0][1].seed != backend.calls[3][1].seed
    assert [c.answer for c in result.candidates] == ["2", "2", "1", "1"]
    assert result.answer == "1"  # chosen among all of them, by their summed weights


def test_filters_must_divide_the_particles():
    with pytest.raises(TTSError, match="multiple of filters"):
        make_strategy("particle_filter", n=6, filters=4)
    with pytest.raises(TTSError, match="filters"):  # particle Gibbs runs its filters in turn
        make_strategy("particle_gibbs", n=4, filters=2)
