"""particle_gibbs on the table-driven test doubles of toy.py: the reference a filter draws holds
its place in the next one, and one iteration is the particle filter."""

from __future__ import annotations

import asyncio

import pytest

from tests.search.toy import RootByFilter, ToyBackend, ToyScorer
from tts.errors import TTSError
from tts.search import make_strategy

LEAVES = {("good",): ["sure \\boxed{1}"], ("bad",): ["wrong \\boxed{2}"]}
SCORES = {"good": 0.99, "bad": 0.01}


def solve(backend: ToyBackend, **options):
    strategy = make_strategy("particle_gibbs", seed=0, **options)
    return asyncio.run(strategy.solve("toy", backend, ToyScorer(SCORES)))


def test_a_solution_found_once_survives_and_draws_the_next_filter_to_it():
    # The first filter finds "good"; the second one's only free particle starts at "bad",
    # but the reference outweighs it and the particle is drawn onto the reference's path.
    backend = RootByFilter(LEAVES, [["good", "bad"], ["bad"]])
    result = solve(backend, n=4, iterations=2)
    assert [(steps, params.n) for steps, params in backend.calls] == [
        ((), 2),
        (("good",), 2),  # filter 1: both particles copy "good"
        ((), 1),  # filter 2: one free particle, one place held by the reference
        (("good",), 1),  # ...which the free particle copies
    ]
    assert [c.answer for c in result.candidates] == ["1", "1"] and result.answer == "1"
    # Without the reference the same second filter keeps "bad" (the particle filter at n=1).
    alone = make_strategy("particle_filter", n=1, seed=0)
    assert (
        asyncio.run(alone.solve("toy", RootByFilter(LEAVES, [["bad"]]), ToyScorer(SCORES))).answer
        == "2"
    )


def test_the_reference_is_never_dropped_however_light():
    # The first filter only finds "bad"; its solution keeps its place in the second filter,
    # where the free particle finds "good" and the weighted pick answers with it.
    result = solve(RootByFilter(LEAVES, [["bad", "bad"], ["good"]]), n=4, iterations=2)
    assert sorted(c.answer for c in result.candidates) == ["1", "2"]
    assert result.answer == "1"


def test_one_iteration_is_the_particle_filter():
    table = {(): ["good", "bad"], **LEAVES}
    gibbs_backend, filter_backend = ToyBackend(table), ToyBackend(table)
    gibbs = solve(gibbs_backend, n=4, iterations=1)
    plain = asyncio.run(
        make_strategy("particle_filter", n=4, seed=0).solve(
            "toy", filter_backend, ToyScorer(SCORES)
        )
    )
    assert gibbs.candidates == plain.candidates and gibbs.tree == plain.tree
    assert gibbs_backend.calls == filter_backend.calls


@pytest.mark.parametrize("n, iterations", [(6, 4), (4, 4)])
def test_the_budget_must_split_into_filters_of_two_or_more(n, iterations):
    with pytest.raises(TTSError, match="multiple of iterations"):
        make_strategy("particle_gibbs", n=n, iterations=iterations)
