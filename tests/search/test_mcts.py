"""MCTS on a table-driven world where every number can be worked out, then on the native engine.

`ToyBackend` and `ToyScorer` (tests/search/toy.py) are test doubles: a model whose next steps and
a PRM whose scores are a table, so a wrong selection or backup rule visits a wrong branch and a
test fails. No model that writes meaningful steps can be downloaded here.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.search.toy import ToyBackend, ToyScorer
from tts.engine import load
from tts.search.mcts import MCTS, MCTSConfig, _Search
from tts.verifiers import load_scorer

GOOD, BAD = "Good start.", "Bad start."
TABLE = {
    (): [BAD, GOOD],  # the bad step first: a tie or a missing score would pick it
    (GOOD,): ["Good step.", "Good step again."],
    (GOOD, "Good step."): ["So \\boxed{4}."],
    (GOOD, "Good step again."): ["So \\boxed{4}."],
    (BAD,): ["Bad step.", "Bad step again."],
    (BAD, "Bad step."): ["So \\boxed{5}."],
    (BAD, "Bad step again."): ["So \\boxed{5}."],
}
SCORES = {GOOD: 0.9, "Good step.": 0.8, "Good step again.": 0.7, "So \\boxed{4}.": 0.95}
SCORES |= {BAD: 0.2, "Bad step.": 0.3, "Bad step again.": 0.3, "So \\boxed{5}.": 0.1}


def run(table, scores=SCORES, backend_class=ToyBackend, **options):
    backend = backend_class(table)
    config = MCTSConfig(**({"expand_k": 2, "concurrency": 1, "value": "prm"} | options))
    result = asyncio.run(MCTS(config).solve("What is 2 + 2?", backend, ToyScorer(scores)))
    return result, backend, {node["text"]: node for node in result.tree["nodes"]}


def check_backups(tree: dict, value: str) -> None:
    """Every node's visits are its children's plus the simulations that ended at it (evaluated by
    its own score), and its value is the mean of all those values."""
    nodes = tree["nodes"]
    for node in nodes:
        children = [nodes[i] for i in node["children"]]
        evaluations = node["visits"] - sum(child["visits"] for child in children)
        # prm: a non-terminal node is evaluated once, when first reached; rollout: never.
        most = 1 if value == "prm" and node["parent"] is not None else 0
        assert 0 <= evaluations <= (node["visits"] if node["terminal"] else most)
        backed_up = sum(child["value"] * child["visits"] for child in children)
        backed_up += evaluations * (node["score"] or 0.0)
        assert node["value"] * node["visits"] == pytest.approx(backed_up)


@pytest.mark.parametrize("value", ["prm", "rollout"])
def test_simulations_concentrate_on_the_good_branch_and_back_up_means(value):
    result, _, nodes = run(TABLE, simulations=12, value=value)
    assert nodes[GOOD]["visits"] > nodes[BAD]["visits"] >= 1
    assert result.answer == "4"
    assert {c.answer for c in result.candidates} >= {"4"}
    assert all(c.finish_reason == "stop" for c in result.candidates)
    assert result.tree["nodes"][0]["visits"] == 12
    check_backups(result.tree, value)


def test_two_simulations_by_hand():
    # 1: root expanded; no visits yet, so PUCT = Q = first-play PRM score: GOOD (0.9), value 0.9.
    # 2: PUCT = Q + c_puct * P * sqrt(sum of sibling visits) / (1 + visits), P = 1/2: GOOD
    #    0.9 + 2 * 1/2 * 1 / 2 = 1.4 beats BAD 0.2 + 2 * 1/2 * 1 / 1 = 1.2; GOOD is expanded,
    #    and its best new step "Good step." (0.8) is evaluated and backed up.
    result, backend, nodes = run(TABLE, simulations=2, c_puct=2.0)
    assert [steps for steps, _ in backend.calls] == [(), (GOOD,)]
    assert (result.tree["nodes"][0]["visits"], result.tree["nodes"][0]["value"]) == (
        2,
        pytest.approx(0.85),
    )
    assert (nodes[GOOD]["visits"], nodes[GOOD]["value"]) == (2, pytest.approx(0.85))
    assert (nodes["Good step."]["visits"], nodes["Good step."]["value"]) == (1, 0.8)
    assert (nodes["Good step again."]["visits"], nodes[BAD]["visits"]) == (0, 0)
    assert result.usage.scorer_calls == 4
    # No terminal node yet: the answer is the most visited path, unfinished.
    assert result.answer is None and result.text == f"{GOOD}\n\nGood step."
    assert result.candidates[0].finish_reason == "length"


def test_large_c_puct_tries_every_child_first_and_zero_exploits():
    _, backend, nodes = run(TABLE, simulations=2, c_puct=10.0)
    assert (nodes[GOOD]["visits"], nodes[BAD]["visits"]) == (1, 1)
    assert len(backend.calls) == 1  # both were evaluated by their scores, none expanded
    _, _, nodes = run(TABLE, simulations=6, c_puct=0.0)
    assert (nodes[GOOD]["visits"], nodes[BAD]["visits"]) == (6, 0)


def test_virtual_loss_counts_as_visits_of_value_zero():
    config = MCTSConfig(c_puct=0.0, virtual_loss=1)
    search = _Search(config, "What is 2 + 2?", ToyBackend({}), ToyScorer({}))
    root, path = search.tree.root, []
    root.visits = 1
    seen = search.tree.add(root, "seen", score=0.5, visits=1, value=0.9)
    new = search.tree.add(root, "new", score=0.6)
    assert search._descend(root, [seen, new], path) is seen  # Q 0.9 beats first-play 0.6
    # Now in flight: Q = 0.9 * 1 / (1 + 1) = 0.45 < 0.6.
    assert search._descend(root, [seen, new], path) is new
    assert path == [seen, new] and search.in_flight == {seen.id: 1, new.id: 1}


class YieldingBackend(ToyBackend):
    """Gives the event loop a turn in every call, as a real backend does, so that concurrent
    simulations interleave."""

    async def generate(self, prompt, params):
        await asyncio.sleep(0)
        return await super().generate(prompt, params)


@pytest.mark.parametrize(("loss", "second"), [(1, ("Right.",)), (0, None)])
def test_virtual_loss_sends_concurrent_simulations_down_different_branches(loss, second):
    table = {(): ["Left.", "Right."], ("Left.",): ["\\boxed{1}"], ("Right.",): ["\\boxed{2}"]}
    result, backend, nodes = run(
        table, {}, YieldingBackend, simulations=2, concurrency=2, value="rollout", virtual_loss=loss
    )
    # Both children score 0.5: without virtual loss the second simulation also picks the first,
    # waits for its rollout step instead of sampling it again, and follows it.
    expected = [(), ("Left.",)] + ([second] if second else [])
    assert [steps for steps, _ in backend.calls] == expected
    assert nodes["Left."]["visits"] == (1 if loss else 2)
    check_backups(result.tree, "rollout")


def test_rollout_goes_step_by_step_to_a_terminal_step_and_scores_it_alone():
    table = {(): ["A.", "Z."], ("A.",): ["B."], ("A.", "B."): ["The end: \\boxed{3}"]}
    result, backend, nodes = run(
        table, {"The end: \\boxed{3}": 0.7}, simulations=1, value="rollout"
    )
    assert [(steps, params.n) for steps, params in backend.calls] == [
        ((), 2),
        (("A.",), 1),
        (("A.", "B."), 1),
    ]
    end = nodes["The end: \\boxed{3}"]
    assert end["terminal"] and end["depth"] == 3 and end["score"] == 0.7
    assert nodes["B."]["score"] is None  # rollout steps are not scored one by one
    assert [n["value"] for n in (nodes[""], nodes["A."], nodes["B."])] == [0.7] * 3
    assert result.answer == "3" and result.text == "A.\n\nB.\n\nThe end: \\boxed{3}"


def test_end_to_end_on_the_native_engine(tiny_llama, tiny_prm_token):
    engine = load(
        tiny_llama,
        backend="native",
        device="cpu",
        block_size=4,
        num_blocks=256,
        check_integrity=True,
    )
    # A random model rarely writes a blank line: a space as the delimiter gives it short steps.
    config = MCTSConfig(
        simulations=6,
        expand_k=2,
        concurrency=2,
        step_delimiter=" ",
        max_step_tokens=4,
        max_steps=4,
        max_tokens=16,
        temperature=1.0,
        seed=0,
    )
    scorer = load_scorer(tiny_prm_token, device="cpu")
    result = asyncio.run(MCTS(config).solve("What is 2 + 2?", engine, scorer))
    nodes = result.tree["nodes"]
    assert result.candidates and nodes[0]["visits"] == 6 and max(n["depth"] for n in nodes) > 1
    check_backups(result.tree, "rollout")
    # Every expansion and rollout step re-sends the prompt and the steps so far (0.83 served
    # from the cache when this was written).
    usage = result.usage
    assert usage.completion_tokens > 0 and usage.cached_tokens / usage.prompt_tokens > 0.5
    assert engine.stats()["blocks_in_use"] == 0
