"""Every strategy through the real native engine with a tiny random model and tiny random PRMs
of each format: the plumbing (prompts, stops, prefix cache, scoring, usage, trees) for real."""

from __future__ import annotations

import asyncio

import pytest

from tts.engine import load
from tts.search import make_strategy
from tts.verifiers import load_scorer

STEP = dict(max_tokens=24, max_step_tokens=8, temperature=1.0, seed=0)
CASES = {
    "best_of_n": dict(n=4, max_tokens=24, seed=0),
    "weighted_best_of_n": dict(n=4, max_tokens=24, seed=0),
    "beam": dict(n=4, beam_width=2, **STEP),
    "dvts": dict(n=4, beam_width=2, **STEP),
    "mcts": dict(n=4, simulations=4, expand_k=2, **STEP),
    "particle_filter": dict(n=4, **STEP),
    "particle_gibbs": dict(n=4, iterations=2, **STEP),
}


@pytest.fixture(scope="module")
def engine(tiny_llama):
    return load(tiny_llama, backend="native", device="cpu", block_size=4, num_blocks=2048)


@pytest.mark.parametrize("prm", ["tiny_prm_token", "tiny_prm_shepherd", "tiny_prm_qwen"])
@pytest.mark.parametrize("name", list(CASES))
def test_strategy_runs_on_the_native_engine(engine, request, name, prm):
    scorer = load_scorer(request.getfixturevalue(prm), device="cpu")
    result = asyncio.run(make_strategy(name, **CASES[name]).solve("What is 2+2?", engine, scorer))
    assert result.candidates
    assert all(c.score is not None and 0.0 <= c.score <= 1.0 for c in result.candidates)
    assert result.usage.completion_tokens > 0 and result.usage.scorer_calls > 0
    assert result.usage.scorer_tokens > result.usage.scorer_calls  # every call reads a prompt
    assert all(c.tokens <= 24 for c in result.candidates)
    if name not in ("best_of_n", "weighted_best_of_n"):
        nodes = result.tree["nodes"]
        assert nodes[0]["parent"] is None and len(nodes) > 1
        assert all(node["parent"] < node["id"] for node in nodes[1:])
    assert engine.stats()["blocks_in_use"] == 0


def test_beam_search_reuses_the_prefix_cache(engine, tiny_prm_token):
    scorer = load_scorer(tiny_prm_token, device="cpu")
    strategy = make_strategy("beam", n=16, beam_width=4, **STEP)
    result = asyncio.run(strategy.solve("What is 2+2?", engine, scorer))
    usage = result.usage
    # Every expansion re-sends the prompt and the steps so far; the cache serves most of it.
    assert usage.cached_tokens / usage.prompt_tokens > 0.5


def test_a_search_bigger_than_the_pool_queues_and_preempts(tiny_llama, tiny_prm_token):
    small = load(tiny_llama, backend="native", device="cpu", block_size=4, num_blocks=48)
    scorer = load_scorer(tiny_prm_token, device="cpu")
    strategy = make_strategy("beam", n=16, beam_width=4, **STEP)
    result = asyncio.run(strategy.solve("What is 2+2?", small, scorer))
    stats = small.stats()
    assert result.candidates and stats["preemptions"] > 0
    assert stats["blocks_in_use"] == 0
