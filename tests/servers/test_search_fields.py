"""Every request field in a search (`tts`, `reasoning_effort`) is honoured as a plain request
honours it or refused by name with a 400, through a real server and the official `openai` client:
lm-eval's `stop` list ends each candidate where it ends a plain sample, and what a search cannot
give (logprobs, n > 1, token ids, ...) is refused rather than silently dropped."""

from __future__ import annotations

import openai
import pytest

from tts.search import StrategyConfig
from tts.servers.schemas import ChatRequest, CompletionRequest, StreamOptions
from tts.servers.search import SEARCH_FIELDS, Passed

ASK = [{"role": "user", "content": "What is 2+2?"}]
LENGTH = 24
# Greedy, so a search's samples and a plain sample are the same text; each step-level strategy
# takes the whole answer as its first step unless the step delimiter comes first.
STEP = {"max_tokens": LENGTH, "max_step_tokens": LENGTH}
SEARCHES = {
    "majority": {"n": 2},
    "best_of_n": {"n": 2},
    "beam": {"n": 1, "beam_width": 1, **STEP},
    "dvts": {"n": 1, "beam_width": 1, **STEP},
    "mcts": {"n": 1, "expand_k": 1, "concurrency": 1, **STEP},
}


@pytest.fixture(scope="module")
def client(base_url) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)


def plain(client: openai.OpenAI, **fields):
    return client.chat.completions.create(
        model="tiny", messages=ASK, max_tokens=LENGTH, temperature=0, **fields
    )


def search(client: openai.OpenAI, name: str, extra: dict | None = None, **fields):
    tts = {"strategy": name, **SEARCHES[name]}
    return client.chat.completions.create(
        model="tiny",
        messages=ASK,
        max_tokens=LENGTH,
        extra_body={"tts": tts, **(extra or {})},
        **({"temperature": 0} | fields),
    )


def a_stop(text: str) -> str:
    """A stop string from the middle of `text`, ahead of any step delimiter."""
    head = text.split("\n\n")[0]
    assert len(head) >= 8, f"the tiny model's greedy answer is too short: {text!r}"
    return head[len(head) // 2 : len(head) // 2 + 3]


@pytest.mark.parametrize("name", list(SEARCHES))
def test_stop_ends_a_search_answer_where_it_ends_a_plain_one(client, name):
    whole = plain(client).choices[0].message.content
    stop = a_stop(whole)
    stops = ["Question:", "</s>", stop]  # as lm-eval sends its `until` list
    expected = plain(client, stop=stops).choices[0]
    assert stop not in expected.message.content and expected.finish_reason == "stop"
    reply = search(client, name, stop=stops)
    assert reply.choices[0].message.content == expected.message.content
    assert reply.choices[0].finish_reason == "stop"
    candidates = reply.model_extra["tts"]["candidates"]
    assert {c["text"] for c in candidates} == {expected.message.content}


def test_stop_token_ids_top_k_and_min_p_reach_every_sample(client):
    ids = plain(client, extra_body={"return_token_ids": True}).choices[0].model_extra["token_ids"]
    stop_ids = {"stop_token_ids": [ids[LENGTH // 2]]}
    expected = plain(client, extra_body=stop_ids).choices[0]
    reply = search(client, "majority", stop_ids)
    assert reply.choices[0].message.content == expected.message.content
    assert reply.choices[0].finish_reason == "stop"
    # At temperature 1, top_k=1 or min_p=1 leaves only the most likely token: greedy text.
    greedy = plain(client).choices[0].message.content
    for narrowing in ({"top_k": 1}, {"min_p": 1.0}):
        reply = search(client, "majority", narrowing, temperature=1.0)
        texts = {c["text"] for c in reply.model_extra["tts"]["candidates"]}
        assert texts == {greedy}, narrowing


CHAT_REFUSED = [
    ("logprobs", {"logprobs": True}),
    ("top_logprobs", {"top_logprobs": 2}),
    ("n", {"n": 2}),
    ("ignore_eos", {"extra_body": {"ignore_eos": True}}),
    ("return_tokens_as_token_ids", {"extra_body": {"return_tokens_as_token_ids": True}}),
    ("return_token_ids", {"extra_body": {"return_token_ids": True}}),
    (
        "stream_options.continuous_usage_stats",
        {"stream": True, "stream_options": {"continuous_usage_stats": True}},
    ),
]


@pytest.mark.parametrize("param, fields", CHAT_REFUSED, ids=[p for p, _ in CHAT_REFUSED])
@pytest.mark.parametrize("asks", ["tts", "reasoning_effort"])
def test_a_chat_field_a_search_cannot_honour_is_refused_by_name(client, param, fields, asks):
    fields = dict(fields)
    extra = fields.pop("extra_body", {})
    extra |= {"tts": {"n": 2}} if asks == "tts" else {"reasoning_effort": "low"}
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model="tiny", messages=ASK, max_tokens=4, extra_body=extra, **fields
        )
    assert refused.value.param == param
    assert f"{param} is not supported with a search" in refused.value.message


@pytest.mark.parametrize(
    "param, fields", [("logprobs", {"logprobs": 0}), ("logprobs", {"logprobs": 2}), ("echo", {})]
)
def test_a_completions_field_a_search_cannot_honour_is_refused_by_name(client, param, fields):
    fields |= {"echo": True} if param == "echo" else {}
    with pytest.raises(openai.BadRequestError) as refused:
        client.completions.create(
            model="tiny", prompt="2+2=", max_tokens=4, extra_body={"tts": {"n": 2}}, **fields
        )
    assert refused.value.param == param


def test_the_defaults_clients_send_are_accepted(client):
    # Explicit default values ask for nothing a search cannot give.
    reply = client.chat.completions.create(
        model="tiny",
        messages=ASK,
        max_tokens=4,
        n=1,
        logprobs=False,
        stream_options=None,
        extra_body={"tts": {"n": 1}, "ignore_eos": False, "return_token_ids": False},
    )
    assert reply.choices[0].finish_reason in ("stop", "length")


def test_every_request_field_has_a_search_handling():
    # A new field must be honoured or refused in a search (SEARCH_FIELDS), never ignored.
    fields = set(ChatRequest.model_fields) | set(CompletionRequest.model_fields)
    fields |= {f"stream_options.{name}" for name in StreamOptions.model_fields}
    assert fields == set(SEARCH_FIELDS)
    options = {h.option for h in SEARCH_FIELDS.values() if isinstance(h, Passed)}
    assert options <= set(StrategyConfig.model_fields)
