"""`echo` on /v1/completions, as lm-eval's loglikelihood uses it: the prompt comes back before
the completion, and with `logprobs` its tokens' log-probabilities come first (the first null),
equal to what transformers computes for the same text."""

from __future__ import annotations

import openai
import pytest
from transformers import AutoTokenizer

from tests.engine.reference import transformers_prompt_logprobs

PROMPTS = ["Question: what is 7 * 8? Answer: 56", "Natalia sold clips to 48 of her friends"]


@pytest.fixture()
def client(base_url) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)


def test_echo_with_logprobs_scores_the_prompt_as_transformers_does(client, tiny_llama):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    plain = client.completions.create(model="tiny", prompt=PROMPTS, max_tokens=1, temperature=0)
    reply = client.completions.create(
        model="tiny", prompt=PROMPTS, echo=True, logprobs=1, max_tokens=1, temperature=0
    )
    assert len(reply.choices) == 2
    for prompt, choice, alone in zip(PROMPTS, reply.choices, plain.choices):
        ids = tokenizer(prompt).input_ids
        assert choice.text == prompt + alone.text
        logprobs = choice.logprobs
        assert len(logprobs.tokens) == len(logprobs.token_logprobs) == len(ids) + 1
        assert logprobs.tokens[: len(ids)] == [tokenizer.decode([i]) for i in ids]
        assert logprobs.token_logprobs[0] is None and logprobs.top_logprobs[0] is None
        expected = transformers_prompt_logprobs(tiny_llama, ids)
        ours = logprobs.token_logprobs[1 : len(ids)]
        assert max(abs(a - b) for a, b in zip(ours, expected)) < 1e-4
        assert all(len(top) == 1 for top in logprobs.top_logprobs[1:])
        offsets = logprobs.text_offset
        assert offsets[0] == 0 and offsets == sorted(offsets)
    assert reply.usage.completion_tokens == 2


def test_echo_of_token_ids_returns_their_text(client, tiny_llama):
    ids = AutoTokenizer.from_pretrained(tiny_llama)(PROMPTS[1]).input_ids
    reply = client.completions.create(
        model="tiny", prompt=ids, echo=True, max_tokens=3, temperature=0
    )
    plain = client.completions.create(model="tiny", prompt=ids, max_tokens=3, temperature=0)
    text = reply.choices[0].text
    assert text.endswith(plain.choices[0].text) and PROMPTS[1] in text
    assert reply.choices[0].logprobs is None


@pytest.mark.parametrize(
    "extra, param, message",
    [
        ({"stream": True}, "echo", "echo is not supported with stream"),
        ({"extra_body": {"tts": {"n": 2}}}, "echo", "not supported with a search"),
        ({"extra_body": {"reasoning_effort": "low"}}, "echo", "not supported with a search"),
        ({"max_tokens": 0}, "max_tokens", "greater than or equal to 1"),
    ],
)
def test_echo_where_it_is_not_implemented_is_refused_by_name(client, extra, param, message):
    with pytest.raises(openai.BadRequestError, match=message) as caught:
        client.completions.create(
            model="tiny", prompt="x", echo=True, logprobs=1, **({"max_tokens": 2} | extra)
        )
    assert caught.value.body["param"] == param
