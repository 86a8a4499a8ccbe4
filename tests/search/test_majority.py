from __future__ import annotations

import asyncio

import pytest

from tts.engine import Completion, SamplingParams, load
from tts.errors import TTSError
from tts.search import make_strategy
from tts.search.select import vote


def test_vote_clusters_equivalent_answers_largest_first():
    answers = ["\\frac{1}{2}", "0.5", "3", None, "3", "3"]
    assert vote(answers) == [[2, 4, 5], [0, 1]]


def test_vote_ties_keep_first_seen_order_and_ignores_missing():
    assert vote(["7", "8"]) == [[0], [1]]
    assert vote([None, None]) == []


class ScriptedBackend:
    """A test double: a model that writes chosen answers does not exist yet (the built-in model
    arrives with issue 7), and random tiny models never write a \\boxed{} answer."""

    def __init__(self, texts: list[str], tokenizer):
        self.texts, self.tokenizer, self.calls = texts, tokenizer, []

    async def generate(self, prompt: str, params: SamplingParams) -> list[Completion]:
        self.calls.append((prompt, params))
        return [
            Completion(t, list(range(i + 1)), "stop", prompt_tokens=10, cached_tokens=0)
            for i, t in enumerate(self.texts[: params.n])
        ]


def test_majority_picks_the_most_common_answer_and_scores_vote_share(tiny_llama):
    tokenizer = load(tiny_llama).tokenizer
    texts = [
        "so it is \\boxed{\\frac{1}{2}}",
        "The answer is 3",
        "we get \\boxed{0.5}.",
        "no idea",
        "#### 0.50",
    ]
    backend = ScriptedBackend(texts, tokenizer)
    strategy = make_strategy("majority", n=5, temperature=0.6, max_tokens=64, seed=3)
    result = asyncio.run(strategy.solve("What is 1/2?", backend))
    assert result.answer == "\\frac{1}{2}"
    assert result.text == texts[0]
    assert [c.score for c in result.candidates] == [0.6, 0.2, 0.6, 0.0, 0.6]
    assert [c.answer for c in result.candidates][3] is None
    prompt, params = backend.calls[0]
    assert "What is 1/2?" in prompt and prompt.endswith("<|im_start|>assistant\n")
    assert (params.n, params.temperature, params.max_tokens, params.seed) == (5, 0.6, 64, 3)
    assert result.usage.prompt_tokens == 50
    assert result.usage.completion_tokens == 1 + 2 + 3 + 4 + 5


def test_majority_on_a_real_model_accounts_for_every_token(tiny_llama):
    backend = load(tiny_llama, backend="hf", device="cpu")
    strategy = make_strategy("majority", n=4, max_tokens=8, seed=0)
    result = asyncio.run(strategy.solve("What is 2 + 2?", backend))
    assert len(result.candidates) == 4
    assert result.usage.completion_tokens == sum(c.tokens for c in result.candidates)
    assert 4 <= result.usage.completion_tokens <= 32
    assert result.usage.prompt_tokens % 4 == 0 and result.usage.seconds > 0
    if result.answer is None:  # random weights rarely write an answer
        assert all(c.score == 0.0 for c in result.candidates)


def test_bad_strategy_options_are_one_line_errors():
    with pytest.raises(TTSError, match="unknown strategy 'beem'"):
        make_strategy("beem")
    with pytest.raises(TTSError, match="n: Input should be greater than or equal to 1"):
        make_strategy("majority", n=0)
    with pytest.raises(TTSError, match="Extra inputs"):
        make_strategy("majority", beam_width=4)
