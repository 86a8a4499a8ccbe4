"""A search's generated tokens capped while it runs (`TokenBudget`), and solutions a limit cut
reported as cut: on a scripted backend for the rules, on the native engine for every strategy."""

from __future__ import annotations

import asyncio

import pytest

from tests.search.toy import DELIMITER, ToyBackend, ToyScorer
from tts.engine import Completion, SamplingParams, load
from tts.search import make_strategy
from tts.search.budget import TokenBudget
from tts.verifiers import load_scorer

STEP = dict(max_tokens=24, max_step_tokens=8, temperature=1.0, seed=0)
CASES = {
    "majority": dict(n=4, max_tokens=24, seed=0),
    "best_of_n": dict(n=4, max_tokens=24, seed=0),
    "beam": dict(n=4, beam_width=2, **STEP),
    "dvts": dict(n=4, beam_width=2, **STEP),
    "mcts": dict(n=8, expand_k=2, concurrency=4, **STEP),
    "particle_filter": dict(n=4, **STEP),
    "particle_gibbs": dict(n=4, iterations=2, **STEP),
    "adaptive_majority": dict(n=8, wave=2, max_tokens=24, seed=0),
    "deepconf": dict(n=8, warmup=2, window=4, max_tokens=24, seed=0),
    "auto": dict(n=8, probe=2, hard="best_of_n", max_tokens=24, seed=0),
}


class Counted:
    """Answers each call with `used` tokens per sample after the test lets it go."""

    tokenizer = None

    def __init__(self, used: int) -> None:
        self.used = used
        self.asked: list[int] = []
        self.release = asyncio.Event()

    async def generate(self, prompt: str, params: SamplingParams) -> list[Completion]:
        self.asked.append(params.max_tokens)
        await self.release.wait()
        used = min(self.used, params.max_tokens)
        return [Completion("x", [1] * used, "stop") for _ in range(params.n)]


@pytest.fixture(scope="module")
def engine(tiny_llama):
    return load(tiny_llama, backend="native", device="cpu", block_size=4, num_blocks=2048)


@pytest.mark.parametrize("name", list(CASES))
def test_a_budget_caps_what_every_strategy_generates(engine, tiny_prm_token, name):
    # The random model writes until each limit, so every strategy would spend far more.
    scorer = load_scorer(tiny_prm_token, device="cpu")
    budget = TokenBudget(engine, 30)
    result = asyncio.run(make_strategy(name, **CASES[name]).solve("What is 2+2?", budget, scorer))
    assert budget.exhausted and result.candidates
    assert result.usage.completion_tokens == budget.spent <= 30
    assert any(c.finish_reason == "length" for c in result.candidates)
    assert engine.stats()["blocks_in_use"] == 0


def test_a_budget_that_is_not_reached_changes_nothing(engine):
    strategy = make_strategy("majority", n=3, max_tokens=8, seed=4)
    plain = asyncio.run(strategy.solve("What is 2+2?", engine))
    budget = TokenBudget(engine, 24)  # exactly n * max_tokens
    capped = asyncio.run(strategy.solve("What is 2+2?", budget))
    assert [c.text for c in capped.candidates] == [c.text for c in plain.candidates]
    assert not budget.exhausted


def test_a_call_that_does_not_fit_waits_for_calls_in_flight_to_give_tokens_back():
    async def run() -> tuple[list[list[Completion]], Counted, TokenBudget]:
        backend = Counted(used=3)
        budget = TokenBudget(backend, 15)
        params = SamplingParams(max_tokens=10)
        calls = [asyncio.ensure_future(budget.generate("p", params)) for _ in range(3)]
        await asyncio.sleep(0.01)
        assert backend.asked == [10]  # the others wait: 10 of 15 are promised to the first
        backend.release.set()
        return await asyncio.gather(*calls), backend, budget

    results, backend, budget = asyncio.run(run())
    # 3 spent, so the second fits whole; the third gets what is left: 15 - 3 - 3 = 9.
    assert backend.asked == [10, 10, 9]
    assert budget.spent == 9 and budget.exhausted


def test_a_call_that_does_not_fit_runs_the_samples_that_fit_whole_first():
    async def run() -> tuple[list[Completion], Counted, TokenBudget]:
        backend = Counted(used=3)
        backend.release.set()
        budget = TokenBudget(backend, 25)
        return (
            await budget.generate("p", SamplingParams(max_tokens=10, n=4, seed=7)),
            backend,
            budget,
        )

    completions, backend, budget = asyncio.run(run())
    # 2 fit whole (20 of 25) and use 6; then 19 are free: 1 more whole; then 16: the last one.
    assert backend.asked == [10, 10, 10]
    assert len(completions) == 4 and budget.spent == 12 and not budget.exhausted


def test_the_token_budget_option_counts_scorer_tokens_and_reports_in_usage(engine, tiny_prm_token):
    scorer = load_scorer(tiny_prm_token, device="cpu")
    free = asyncio.run(make_strategy("beam", **CASES["beam"]).solve("What is 2+2?", engine, scorer))
    spent = free.usage.completion_tokens + free.usage.scorer_tokens
    # Beam search scores between steps: what the scorer read leaves less for the next steps.
    strategy = make_strategy("beam", token_budget=spent // 2, **CASES["beam"])
    capped = asyncio.run(strategy.solve("What is 2+2?", engine, scorer))
    usage = capped.usage
    assert usage.token_budget == spent // 2 and usage.budget_exhausted
    assert usage.completion_tokens < free.usage.completion_tokens
    # Generation stops at the limit; the scorer still reads what was generated.
    assert usage.completion_tokens <= spent // 2
    assert usage.completion_tokens + usage.scorer_tokens > spent // 2
    assert free.usage.token_budget is None and not free.usage.budget_exhausted


def test_a_spent_budget_answers_without_the_backend():
    async def run() -> tuple[list[Completion], Counted]:
        backend = Counted(used=4)
        backend.release.set()
        budget = TokenBudget(backend, 8)
        await budget.generate("p", SamplingParams(max_tokens=4, n=2))
        return await budget.generate("p", SamplingParams(max_tokens=4, n=3)), backend

    empty, backend = asyncio.run(run())
    assert len(backend.asked) == 1
    assert [(c.token_ids, c.finish_reason) for c in empty] == [([], "length")] * 3


def test_a_solution_cut_at_its_token_limit_finishes_with_length_not_stop():
    # A token per word: after "a b c", 7 tokens in all leave room for 4, so both second steps
    # reach max_tokens. One holds an answer (the solution ended); the other was cut.
    table = {(): ["a b c"], ("a b c",): ["The answer is \\boxed{4}", "d e f g h"]}
    strategy = make_strategy("beam", n=2, beam_width=1, max_tokens=7, selection="best")
    result = asyncio.run(strategy.solve("toy", ToyBackend(table), ToyScorer({"d e f g h": 0.9})))
    finish = {c.text.split(DELIMITER)[-1]: c.finish_reason for c in result.candidates}
    assert finish == {"The answer is \\boxed{4}": "stop", "d e f g h": "length"}
    assert result.text.endswith("d e f g h") and result.answer is None
