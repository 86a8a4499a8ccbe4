"""best_of_n, weighted_best_of_n, beam and dvts on the table-driven test doubles of toy.py,
where the right choice at every step is known."""

from __future__ import annotations

import asyncio
import math

import pytest

from tests.search.toy import ToyBackend, ToyScorer
from tts.errors import TTSError
from tts.search import make_strategy
from tts.search.base import Candidate
from tts.search.select import select
from tts.search.tree import SearchTree

SOLUTIONS = {(): ["p\n\nq \\boxed{1}", "r\n\ns \\boxed{2}", "t\n\nu \\boxed{1}"]}
STEP_SCORES = {
    "p": 0.9,
    "q \\boxed{1}": 0.2,
    "r": 0.3,
    "s \\boxed{2}": 0.5,
    "t": 0.3,
    "u \\boxed{1}": 0.4,
}


def solve(name: str, table, scores, **options):
    backend, scorer = ToyBackend(table), ToyScorer(scores)
    strategy = make_strategy(name, **options)
    return asyncio.run(strategy.solve("toy", backend, scorer)), backend, scorer


@pytest.mark.parametrize(
    "aggregation, answer",
    # Solution scores (p,q | r,s | t,u): last .2/.5/.4, min .2/.3/.3, mean .55/.4/.35,
    # prod .18/.15/.12.
    [("last", "2"), ("min", "2"), ("mean", "1"), ("prod", "1")],
)
def test_best_of_n_aggregates_step_scores_as_asked(aggregation, answer):
    result, _, scorer = solve("best_of_n", SOLUTIONS, STEP_SCORES, n=3, aggregation=aggregation)
    assert result.answer == answer
    assert scorer.calls == 3 and result.usage.scorer_calls == 3
    assert result.usage.completion_tokens == sum(c.tokens for c in result.candidates) == 3 * 3


def test_weighted_best_of_n_sums_scores_per_answer():
    # last: answer 1 totals .2 + .4 = .6, answer 2 has .5: weighted says 1, best says 2.
    weighted, _, _ = solve("weighted_best_of_n", SOLUTIONS, STEP_SCORES, n=3)
    best, _, _ = solve("best_of_n", SOLUTIONS, STEP_SCORES, n=3)
    assert (weighted.answer, best.answer) == ("1", "2")
    assert weighted.text == "t\n\nu \\boxed{1}"  # the best-scored member of the winning answer


def test_tree_exports_as_json_and_networkx():
    result, _, _ = solve("beam", BEAM_TABLE, BEAM_SCORES, n=4, beam_width=2)
    tree = SearchTree()
    child = tree.add(tree.root, "a", score=0.9)
    tree.add(child, "b", terminal=True)
    graph = tree.to_networkx()
    assert list(graph.edges) == [(0, 1), (1, 2)] and graph.nodes[2]["terminal"]
    assert tree.steps(tree.nodes[2]) == ["a", "b"]
    assert len(result.tree["nodes"]) == len({n["id"] for n in result.tree["nodes"]})


def test_select_rules():
    c = [Candidate("a", "1", 0.9), Candidate("b", "2", 0.5), Candidate("c", "2", 0.5)]
    assert select(c, "best").text == "a"
    assert select(c, "weighted").text == "b"
    assert select(c, "majority").text == "b"
    assert select([Candidate("x", None, 0.1), Candidate("y", None, 0.7)], "weighted").text == "y"
    assert select([], "best") is None


BEAM_TABLE = {
    (): ["a", "b", "c", "d"],
    ("a",): ["a1 \\boxed{1}", "a2"],
    ("c",): ["c1 \\boxed{2}", "c2 \\boxed{2}"],
    ("a", "a2"): ["a2x \\boxed{1}"],
}
BEAM_SCORES = {"a": 0.9, "b": 0.2, "c": 0.6, "d": 0.1, "a1 \\boxed{1}": 0.3, "a2": 0.8}
BEAM_SCORES |= {"c1 \\boxed{2}": 0.7, "c2 \\boxed{2}": 0.65, "a2x \\boxed{1}": 0.95}


def test_beam_keeps_the_best_m_and_expands_each_into_n_over_m():
    result, backend, _ = solve("beam", BEAM_TABLE, BEAM_SCORES, n=4, beam_width=2, selection="best")
    expanded = [(steps, params.n) for steps, params in backend.calls]
    # Depth 1: N=4 first steps; a (.9) and c (.6) are kept, b and d dropped; each gets N/M = 2.
    # Depth 2: a1, c1, c2 end; a2 is the one partial solution left, and it is expanded again.
    assert expanded == [((), 4), (("a",), 2), (("c",), 2), (("a", "a2"), 2)]
    assert all(params.stop == ("\n\n",) for _, params in backend.calls)
    assert sorted(c.answer for c in result.candidates) == ["1", "1", "1", "2", "2"]
    assert result.answer == "1" and result.text == "a\n\na2\n\na2x \\boxed{1}"
    nodes = result.tree["nodes"]
    assert len(nodes) == 1 + 4 + 4 + 2 and nodes[0]["children"]


def test_beam_weighted_selection_uses_every_finished_solution():
    result, _, _ = solve("beam", BEAM_TABLE, BEAM_SCORES, n=4, beam_width=2)
    assert result.answer == "1"  # .3 + .95 + .95 against .7 + .65


def test_dvts_searches_each_subtree_greedily():
    table = {
        (): ["a", "b"],
        ("a",): ["a1 \\boxed{1}", "a2"],
        ("a", "a2"): ["a2x \\boxed{1}"],
        ("b",): ["b1 \\boxed{3}", "b2 \\boxed{4}"],
    }
    scores = BEAM_SCORES | {"b1 \\boxed{3}": 0.4, "b2 \\boxed{4}": 0.45}
    result, backend, _ = solve("dvts", table, scores, n=4, beam_width=2, selection="best")
    assert [c.answer for c in result.candidates] == ["1", "4"]  # one leaf per subtree
    assert sorted((steps, p.n) for steps, p in backend.calls) == [
        ((), 2),
        (("a",), 2),
        (("a", "a2"), 2),
        (("b",), 2),
    ]
    assert result.answer == "1"


def test_step_budget_ends_the_search():
    table = {(): ["x"], ("x",): ["x"], ("x", "x"): ["x"]}
    result, backend, _ = solve("beam", table, {}, n=2, beam_width=1, max_steps=3)
    assert len(backend.calls) == 3 and all(len(steps) < 3 for steps, _ in backend.calls)
    assert result.candidates and all(c.text == "x\n\nx\n\nx" for c in result.candidates)


@pytest.mark.parametrize("name", ["best_of_n", "weighted_best_of_n", "beam", "dvts"])
def test_reward_guided_strategies_need_a_scorer(name):
    with pytest.raises(TTSError, match="--prm"):
        asyncio.run(make_strategy(name, n=4).solve("p", ToyBackend({}), None))


def test_beam_width_must_divide_n():
    with pytest.raises(TTSError, match="multiple of beam_width"):
        make_strategy("beam", n=6, beam_width=4)


@pytest.mark.parametrize(
    "options", [{"temperature": float("inf")}, {"c_puct": float("nan")}, {"virtual_loss": 10**400}]
)
def test_options_that_no_search_can_use_are_refused(options):
    with pytest.raises(TTSError, match=next(iter(options))):
        make_strategy("mcts", **options)


class Confident(ToyBackend):
    """ToyBackend whose samples carry log-probabilities: -1 per token, -5 per token of a step
    written with "?" (the policy was unsure of it)."""

    async def generate(self, prompt, params):
        completions = await super().generate(prompt, params)
        for c in completions:
            cost = -5.0 if "?" in c.text else -1.0
            c.logprobs = [{token: cost} for token in c.token_ids] if params.logprobs == 0 else None
        return completions


def test_confidence_weight_lets_the_policy_overrule_a_fooled_prm():
    # The PRM prefers the unsure solution (.6 vs .5); its tokens cost 5 nats each, not 1.
    table = {(): ["sure \\boxed{1}", "unsure? \\boxed{2}"]}
    scores = {"sure \\boxed{1}": 0.5, "unsure? \\boxed{2}": 0.6}
    options = dict(n=2, aggregation="last")
    plain = asyncio.run(
        make_strategy("best_of_n", **options).solve("toy", Confident(table), ToyScorer(scores))
    )
    assert plain.answer == "2"
    backend = Confident(table)
    both = asyncio.run(
        make_strategy("best_of_n", confidence_weight=1.0, **options).solve(
            "toy", backend, ToyScorer(scores)
        )
    )
    assert backend.calls[0][1].logprobs == 0
    # 0.6 x exp(1 x (-10 - -2)) is far below 0.5 x exp(0).
    assert both.answer == "1"
    assert [c.score for c in both.candidates] == pytest.approx([0.5, 0.6 * math.exp(-8)])
