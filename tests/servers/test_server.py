"""A real server on 127.0.0.1 driven by the official `openai` client and by raw HTTP."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import openai
import pytest

from tts.cli import main
from tts.errors import TTSError
from tts.servers import load_config
from tts.servers.search import split_reasoning

EXAMPLE = Path(__file__).parents[2] / "configs" / "server.yaml"
ASK = [{"role": "user", "content": "What is 2+2?"}]
STEP = {"max_tokens": 24, "max_step_tokens": 8, "seed": 0}


@pytest.fixture(scope="module")
def client(base_url) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)


def metric(base_url: str, name: str) -> float:
    for line in httpx.get(f"{base_url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)


def test_models_and_health(client, base_url):
    assert [m.id for m in client.models.list()] == ["tiny"]
    assert httpx.get(f"{base_url}/health").json() == {"status": "ok"}


def test_chat_completion(client):
    reply = client.chat.completions.create(model="tiny", messages=ASK, max_tokens=8, seed=1)
    choice = reply.choices[0]
    assert reply.object == "chat.completion" and choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.finish_reason in ("stop", "length")
    assert 0 < reply.usage.completion_tokens <= 8 and reply.usage.prompt_tokens > 0


def test_async_chat_completions_run_concurrently(base_url):
    async def ask_three() -> list:
        async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="x") as client:
            calls = [
                client.chat.completions.create(
                    model="tiny", messages=ASK, max_tokens=6, max_completion_tokens=6, seed=s
                )
                for s in range(3)
            ]
            return await asyncio.gather(*calls)

    replies = asyncio.run(ask_three())
    assert len({r.id for r in replies}) == 3
    assert all(r.usage.completion_tokens <= 6 for r in replies)


def test_completions_with_n_logprobs_and_exact_counts(client):
    reply = client.completions.create(
        model="tiny", prompt="Once upon", n=3, max_tokens=6, logprobs=2, seed=0, stop=["\n\n"]
    )
    assert [c.index for c in reply.choices] == [0, 1, 2]
    for choice in reply.choices:
        counts = choice.model_extra["tts"]
        assert set(counts) == {"completion_tokens", "cached_tokens", "stop_reason"}
        assert counts["completion_tokens"] == len(choice.logprobs.tokens) <= 6
        # keyed by token text, so two byte fragments that both print as U+FFFD collapse
        assert all(1 <= len(top) <= 2 for top in choice.logprobs.top_logprobs)
        assert counts["stop_reason"] in (None, "\n\n")
    assert reply.usage.completion_tokens == sum(
        c.model_extra["tts"]["completion_tokens"] for c in reply.choices
    )
    assert reply.usage.prompt_tokens_details.cached_tokens >= 0


def test_vllm_extensions_for_the_remote_backend(base_url):
    body = {"prompt": "Once upon", "max_tokens": 8, "temperature": 0, "logprobs": 1}
    body |= {"return_tokens_as_token_ids": True, "top_k": 5, "min_p": 0.01}
    url = f"{base_url}/v1/completions"
    tokens = httpx.post(url, json=body).json()["choices"][0]["logprobs"]["tokens"]
    ids = [int(t.removeprefix("token_id:")) for t in tokens]
    third = ids[2]
    cut = httpx.post(url, json=body | {"stop_token_ids": [third]}).json()["choices"][0]
    assert cut["finish_reason"] == "stop" and cut["tts"]["stop_reason"] == third
    assert cut["tts"]["completion_tokens"] == ids.index(third) + 1


def test_chat_n_with_logprobs(client):
    reply = client.chat.completions.create(
        model="tiny", messages=ASK, n=3, max_tokens=5, logprobs=True, top_logprobs=2
    )
    assert len(reply.choices) == 3
    for choice in reply.choices:
        entries = choice.logprobs.content
        assert entries and all(len(e.top_logprobs) == 2 and e.logprob <= 0 for e in entries)


def test_streamed_chat_matches_the_plain_reply_and_ends_with_usage(client):
    kwargs = dict(model="tiny", messages=ASK, max_tokens=24, temperature=0)
    whole = client.chat.completions.create(**kwargs).choices[0]
    chunks = list(
        client.chat.completions.create(
            **kwargs, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.message.content
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert reasons[-1] == whole.finish_reason and not any(reasons[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


def test_streamed_completions_finish_every_choice_once(client):
    stream = client.completions.create(
        model="tiny", prompt="Once upon", n=2, max_tokens=12, stream=True, seed=3
    )
    finished: dict[int, list] = {0: [], 1: []}
    for chunk in stream:
        for choice in chunk.choices:
            if choice.finish_reason:
                finished[choice.index].append(choice.model_extra["tts"]["completion_tokens"])
    assert all(len(counts) == 1 and 0 < counts[0] <= 12 for counts in finished.values())


def test_majority_through_extra_body(client):
    options = {"strategy": "majority", "n": 4, "max_tokens": 16, "seed": 0}
    reply = client.chat.completions.create(model="tiny", messages=ASK, extra_body={"tts": options})
    extra = reply.model_extra["tts"]
    assert extra["strategy"] == "majority" and len(extra["candidates"]) == 4
    assert {"text", "answer", "score", "votes"} <= set(extra["candidates"][0])
    assert "tree" not in extra
    tokens = sum(c["tokens"] for c in extra["candidates"])
    assert reply.usage.completion_tokens == tokens  # every candidate's tokens, not one answer's
    details = reply.usage.completion_tokens_details
    assert 0 <= details.reasoning_tokens <= reply.usage.completion_tokens


def test_beam_with_the_prm_returns_its_tree(client):
    options = {"strategy": "beam", "n": 4, "beam_width": 2, "return_tree": True, **STEP}
    reply = client.chat.completions.create(model="tiny", messages=ASK, extra_body={"tts": options})
    extra = reply.model_extra["tts"]
    assert all(0 <= c["score"] <= 1 for c in extra["candidates"])
    nodes = extra["tree"]["nodes"]
    assert nodes[0]["parent"] is None and len(nodes) > 1
    assert extra["scorer_calls"] > 0 and reply.usage.prompt_tokens_details.cached_tokens > 0


def test_reasoning_effort_runs_its_preset(client):
    reply = client.chat.completions.create(
        model="tiny", messages=ASK, reasoning_effort="low", max_tokens=8
    )
    extra = reply.model_extra["tts"]
    assert extra["strategy"] == "majority" and len(extra["candidates"]) == 4  # the low preset


def test_streamed_search_keeps_alive_then_sends_the_answer(client, base_url):
    options = {"strategy": "beam", "n": 4, "beam_width": 2, **STEP}
    body = {"messages": ASK, "stream": True, "tts": options}
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body, timeout=30) as r:
        lines = [line for line in r.iter_lines() if line]
    assert lines[0] == ": searching" and lines[-1] == "data: [DONE]"
    stream = client.chat.completions.create(
        model="tiny",
        messages=ASK,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"tts": {"strategy": "majority", "n": 3, "max_tokens": 12}},
    )
    chunks = list(stream)
    last = next(c for c in reversed(chunks) if c.choices)
    assert last.choices[0].finish_reason and len(last.model_extra["tts"]["candidates"]) == 3
    assert chunks[-1].usage.completion_tokens == sum(
        c["tokens"] for c in last.model_extra["tts"]["candidates"]
    )


def test_a_backend_without_stream_still_streams(slow_url):
    client = openai.OpenAI(base_url=f"{slow_url}/v1", api_key="x", max_retries=0)
    chunks = list(client.completions.create(model="slow", prompt="hi", stream=True))
    assert chunks[-1].choices[0].text == "slow" and chunks[-1].choices[0].finish_reason == "stop"


def test_reasoning_is_split_from_the_answer():
    assert split_reasoning("<think> 2+2 is 4 </think> \\boxed{4}") == ("2+2 is 4", "\\boxed{4}")
    assert split_reasoning("just 4") == (None, "just 4")


BAD = {
    "malformed JSON": (b'{"messages": [', 400),
    "not an object": (b"[1, 2]", 400),
    "messages of the wrong type": ({"messages": "hi"}, 400),
    "no messages": ({"messages": []}, 400),
    "unknown role": ({"messages": [{"role": "wizard", "content": "hi"}]}, 400),
    "n of the wrong type": ({"messages": ASK, "n": "many"}, 400),
    "absurd n": ({"messages": ASK, "n": 10**6}, 400),
    "negative max_tokens": ({"messages": ASK, "max_tokens": -1}, 400),
    "absurd max_tokens": ({"messages": ASK, "max_tokens": 10**9}, 400),
    "negative temperature": ({"messages": ASK, "temperature": -1}, 400),
    "top_p above 1": ({"messages": ASK, "top_p": 2}, 400),
    "empty stop string": ({"messages": ASK, "stop": [""]}, 400),
    "unknown model": ({"messages": ASK, "model": "gpt-9"}, 404),
    "unknown strategy": ({"messages": ASK, "tts": {"strategy": "telepathy"}}, 400),
    "bad strategy option": ({"messages": ASK, "tts": {"strategy": "beam", "beam_w": 2}}, 400),
    "absurd search budget": ({"messages": ASK, "tts": {"n": 10**6}}, 400),
    "n with a search": ({"messages": ASK, "n": 2, "tts": {"strategy": "majority"}}, 400),
    "unknown effort": ({"messages": ASK, "reasoning_effort": "maximal"}, 400),
    "tts of the wrong type": ({"messages": ASK, "tts": "beam"}, 400),
    "prompt longer than the model": ({"messages": [{"role": "user", "content": "a " * 5000}]}, 400),
    "body too large": ({"messages": [{"role": "user", "content": "a" * 70_000}]}, 413),
}


def assert_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_gets_a_4xx_error_object(base_url, case):
    body, status = BAD[case]
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    for stream in (False, True):  # a stream must fail before its 200 just the same
        if not isinstance(body, bytes):
            content = json.dumps({**body, "stream": stream}).encode()
        response = httpx.post(
            f"{base_url}/v1/chat/completions",
            content=content,
            headers={"Content-Type": "application/json"},
        )
        assert_error(response, status)


def test_unknown_routes_and_methods_get_error_objects(base_url):
    assert_error(httpx.get(f"{base_url}/v1/nothing"), 404)
    assert_error(httpx.get(f"{base_url}/v1/completions"), 405)
    assert_error(httpx.post(f"{base_url}/v1/completions", json={"prompt": 7}), 400)


def test_search_without_a_prm_is_refused(keyed_url):
    headers = {"Authorization": "Bearer sesame"}
    for stream in (False, True):
        body = {"messages": ASK, "stream": stream, "tts": {"strategy": "beam", "n": 4}}
        response = httpx.post(f"{keyed_url}/v1/chat/completions", json=body, headers=headers)
        assert "process reward model" in assert_error(response, 400)["message"]


def test_api_key(keyed_url):
    url = f"{keyed_url}/v1/models"
    assert assert_error(httpx.get(url), 401)["code"] == "invalid_api_key"
    assert_error(httpx.get(url, headers={"Authorization": "Bearer nope"}), 401)
    assert_error(httpx.post(f"{keyed_url}/v1/chat/completions", json={"messages": ASK}), 401)
    assert httpx.get(url, headers={"Authorization": "Bearer sesame"}).status_code == 200
    assert httpx.get(f"{keyed_url}/health").status_code == 200
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{keyed_url}/v1", api_key="nope").models.list()


def test_a_full_queue_answers_429(slow_url):
    async def four() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=slow_url, timeout=10) as client:
            body = {"prompt": "hi"}
            return await asyncio.gather(
                *(client.post("/v1/completions", json=body) for _ in range(4))
            )

    responses = asyncio.run(four())
    assert sorted(r.status_code for r in responses) == [200, 200, 429, 429]
    for response in responses:
        if response.status_code == 429:
            assert response.headers["Retry-After"] == "1"
            assert assert_error(response, 429)["type"] == "rate_limit_error"


def wait_for_idle(base_url: str, engine, within: float) -> None:
    deadline = time.monotonic() + within
    while engine.stats()["blocks_in_use"] or metric(base_url, "tts_requests_running"):
        assert time.monotonic() < deadline, "KV blocks were not freed"
        time.sleep(0.02)
    assert metric(base_url, "tts_kv_blocks_in_use") == 0


def test_a_client_leaving_mid_stream_frees_its_kv_blocks(base_url, engine):
    # Greedy on the random model runs to max_tokens: seconds, unless the disconnect aborts it.
    body = {"prompt": "Once upon", "max_tokens": 3000, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{base_url}/v1/completions", json=body, timeout=30) as response:
        lines = response.iter_lines()
        for _ in range(5):
            next(lines)
        assert engine.stats()["blocks_in_use"] > 0
    wait_for_idle(base_url, engine, within=1.0)


def test_a_client_giving_up_on_a_plain_request_frees_its_kv_blocks(base_url, engine):
    body = {"prompt": "Once upon", "max_tokens": 3000, "temperature": 0}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{base_url}/v1/completions", json=body, timeout=0.3)
    wait_for_idle(base_url, engine, within=1.0)
    assert 'status="499"' in httpx.get(f"{base_url}/metrics").text


def test_metrics_count_requests_tokens_and_the_cache(base_url, client):
    client.completions.create(model="tiny", prompt="Once upon", max_tokens=4)
    text = httpx.get(f"{base_url}/metrics").text
    assert 'tts_requests_total{route="/v1/completions",status="200"}' in text
    assert metric(base_url, "tts_completion_tokens_total") >= 4
    assert metric(base_url, "tts_kv_blocks_total") == 1024
    assert 0 <= metric(base_url, "tts_prefix_cache_hit_rate") <= 1


def test_the_example_config_loads_and_flags_override_it(tmp_path):
    config = load_config(EXAMPLE, model=str(tmp_path), port=9000, api_key=None)
    assert config.port == 9000 and config.max_queue == 128 and config.api_key is None
    assert config.reasoning_effort["low"].strategy == "majority"  # a default kept
    assert config.reasoning_effort["high"].strategy == "auto"
    assert config.host == "127.0.0.1" and config.model_name == tmp_path.name
    with pytest.raises(TTSError, match="max_concurrency"):
        load_config(None, model="m", max_concurrency=0)


def test_serve_refuses_a_missing_model_in_one_line(tmp_path):
    with pytest.raises(SystemExit, match="model folder not found"):
        main(["serve", "--model", str(tmp_path / "absent")])
