"""The server at its edges, through a real server on 127.0.0.1 and the official `openai` client:
hostile bodies, refused features, batches of prompts, connections kept open after errors, and
one bad or failing request among good ones."""

from __future__ import annotations

import asyncio
import http.client
import json
from urllib.parse import urlparse

import httpx
import openai
import pytest
from pydantic import BaseModel

from tests.servers.conftest import SlowBackend
from tests.servers.test_server import ASK, assert_error, wait_for_idle
from tts.engine.backend import MAX_STOPS
from tts.servers import ServerConfig, create_app

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def client(base_url) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)


def post(base_url: str, route: str, body: bytes | dict, **headers: str) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{base_url}{route}", content=content, headers=JSON | headers, timeout=30)


# --- bodies JSON allows but nothing downstream can take ---------------------------------------


@pytest.mark.parametrize(
    ("depth", "message"), [(100, "nested deeper than 64 levels"), (30_000, "not valid JSON")]
)
def test_deeply_nested_json_is_a_400(base_url, depth, message):
    body = b'{"messages": ' + b"[" * depth + b"]" * depth + b"}"
    assert message in assert_error(post(base_url, "/v1/chat/completions", body), 400)["message"]


LONE = '"\\ud800x"'  # JSON's escape for a lone surrogate, which no UTF-8 text can hold
SURROGATES = {
    "messages.0.content": '{"messages": [{"role": "user", "content": %s}]}',
    "stop.0": '{"messages": [{"role": "user", "content": "hi"}], "stop": [%s]}',
    "tts.strategy": '{"messages": [{"role": "user", "content": "hi"}], "tts": {"strategy": %s}}',
    "prompt.1": '{"prompt": ["ok", %s]}',
}


@pytest.mark.parametrize("param", list(SURROGATES))
def test_a_lone_surrogate_is_a_400_naming_its_field(base_url, param):
    route = "/v1/completions" if param.startswith("prompt") else "/v1/chat/completions"
    body = (SURROGATES[param] % LONE).encode()
    error = assert_error(post(base_url, route, body), 400)
    assert error["param"] == param and "Unicode" in error["message"]


# --- content types ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        None,
    ],
)
def test_only_json_bodies_are_served(base_url, content_type):
    """A browser may POST these to any origin without a preflight: a web page must not be able
    to make a keyless localhost server compute."""
    body = json.dumps({"prompt": "hi", "max_tokens": 2}).encode()
    headers = {} if content_type is None else {"Content-Type": content_type}
    response = httpx.post(f"{base_url}/v1/completions", content=body, headers=headers)
    error = assert_error(response, 415)
    assert error["code"] == "unsupported_media_type" and "application/json" in error["message"]


def test_json_with_a_charset_is_served(base_url):
    body = {"prompt": "hi", "max_tokens": 2}
    response = post(
        base_url, "/v1/completions", body, **{"Content-Type": "application/json; charset=utf-8"}
    )
    assert response.status_code == 200, response.text


# --- connections stay open after errors ---------------------------------------------------------


def test_errors_keep_the_connection_open(base_url):
    """A pooled client sends its next request on the same connection: every error must leave it
    open (no `Connection: close`, the body read), or that request fails on a dead socket."""
    url = urlparse(base_url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    good = json.dumps({"prompt": "hi", "max_tokens": 2}).encode()
    exchanges = [
        ("POST", "/v1/completions", b'{"prompt": [', JSON, 400),
        ("POST", "/v1/completions", b'{"prompt": 7}', JSON, 400),
        ("POST", "/v1/completions", b'{"prompt": "\\ud800"}', JSON, 400),
        ("POST", "/v1/completions", b"[" * 30_000, JSON, 400),
        ("POST", "/v1/completions", b'{"prompt": "%s"}' % (b"a" * 70_000), JSON, 413),
        ("POST", "/v1/completions", good, {"Content-Type": "text/plain"}, 415),
        ("POST", "/v1/completions", b'{"prompt": "hi", "model": "gpt"}', JSON, 404),
        ("GET", "/v1/nothing", None, {}, 404),
        ("GET", "/v1/completions", None, {}, 405),
        ("POST", "/v1/completions", good, JSON, 200),
    ]
    sockets = set()
    for method, path, body, headers, status in exchanges:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        assert response.status == status, (path, body)
        assert not response.will_close, (status, response.getheaders())
        sockets.add(id(connection.sock))
    assert len(sockets) == 1
    connection.close()


class BrokenBackend(SlowBackend):
    """Fails every request: stands for a bug (nothing a client sends should reach one)."""

    async def generate(self, prompt, params):
        raise RuntimeError("a bug")


@pytest.fixture(scope="module")
def broken_url(servers, tiny_llama) -> str:
    return servers.start(create_app(BrokenBackend(tiny_llama), None, ServerConfig(model="m")))


def test_a_bug_is_a_500_error_object_that_keeps_the_connection_open(broken_url):
    url = urlparse(broken_url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    sockets = set()
    for method, path, body, status in [
        ("POST", "/v1/completions", b'{"prompt": "hi"}', 500),
        ("POST", "/v1/chat/completions", json.dumps({"messages": ASK}).encode(), 500),
        ("GET", "/v1/models", None, 200),
    ]:
        connection.request(method, path, body=body, headers=JSON)
        response = connection.getresponse()
        payload = json.loads(response.read())
        assert response.status == status and not response.will_close
        if status == 500:
            assert payload["error"]["code"] == "internal_error"
        sockets.add(id(connection.sock))
    assert len(sockets) == 1
    connection.close()


def test_a_pooled_openai_client_goes_on_after_errors(client):
    for _ in range(3):
        with pytest.raises(openai.BadRequestError):
            client.completions.create(model="tiny", prompt="hi", max_tokens=2, extra_body={"x": 1})
        with pytest.raises(openai.NotFoundError):
            client.completions.create(model="gpt", prompt="hi", max_tokens=2)
        assert client.completions.create(model="tiny", prompt="hi", max_tokens=2).choices


# --- what is not implemented is refused by name -------------------------------------------------

UNSUPPORTED = [
    ("response_format", {"type": "json_object"}),
    ("response_format", {"type": "json_schema", "json_schema": {"name": "a", "schema": {}}}),
    ("tools", [{"type": "function", "function": {"name": "f", "parameters": {}}}]),
    ("tool_choice", "required"),
    ("tool_choice", {"type": "function", "function": {"name": "f"}}),
    ("functions", [{"name": "f", "parameters": {}}]),
    ("function_call", {"name": "f"}),
    ("frequency_penalty", 0.5),
    ("frequency_penalty", False),
    ("presence_penalty", -1),
    ("repetition_penalty", 1.3),
    ("logit_bias", {"5": 100}),
]


@pytest.mark.parametrize(("field", "value"), UNSUPPORTED)
def test_unsupported_features_are_refused_by_name(base_url, field, value):
    for stream in (False, True):
        body = {"messages": ASK, "max_tokens": 2, "stream": stream, field: value}
        error = assert_error(post(base_url, "/v1/chat/completions", body), 400)
        assert error["param"] == field and field in error["message"]
        assert error["code"] == "unsupported_parameter"


UNKNOWN = [
    ("/v1/chat/completions", {"messages": ASK, "temprature": 0}, "temprature"),
    (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "hi", "x": 1}]},
        "messages.0.x",
    ),
    (
        "/v1/chat/completions",
        {"messages": ASK, "stream_options": {"every": 1}},
        "stream_options.every",
    ),
    ("/v1/completions", {"prompt": "hi", "suffix": "!"}, "suffix"),
    ("/v1/completions", {"prompt": "hi", "best_of": 2}, "best_of"),
    ("/v1/completions", {"prompt": "hi", "max_completion_tokens": 2}, "max_completion_tokens"),
    ("/v1/completions", {"prompt": "hi", "tools": []}, "tools"),
]


@pytest.mark.parametrize(("route", "body", "param"), UNKNOWN)
def test_unknown_fields_are_refused_by_name(base_url, route, body, param):
    error = assert_error(post(base_url, route, body), 400)
    assert error["param"] == param and error["code"] == "unknown_parameter"
    assert param in error["message"]


def test_unknown_search_options_are_refused_by_name(base_url):
    body = {"messages": ASK, "tts": {"strategy": "majority", "n": 2, "expand_k": 3}}
    assert "expand_k" in assert_error(post(base_url, "/v1/chat/completions", body), 400)["message"]


def test_the_sdks_structured_output_helper_is_refused(client):
    class Answer(BaseModel):
        value: int

    with pytest.raises(openai.BadRequestError, match="response_format"):
        client.chat.completions.parse(model="tiny", messages=ASK, response_format=Answer)


# What lm-evaluation-harness (local-completions, local-chat-completions) and guidellm send.
CLIENT_DEFAULTS = {
    "lm-eval completions": (
        "/v1/completions",
        {"model": "tiny", "prompt": ["2+2=", "3+3="], "max_tokens": 4, "temperature": 0}
        | {"stop": ["\n\n"], "seed": 1234},
    ),
    "lm-eval chat": (
        "/v1/chat/completions",
        {"messages": ASK, "model": "tiny", "max_tokens": 4, "temperature": 0}
        | {"stop": ["<|endoftext|>"], "seed": 1234},
    ),
    "guidellm completions": (
        "/v1/completions",
        {"model": "tiny", "prompt": "hi", "max_tokens": 4, "stop": None, "ignore_eos": True},
    ),
    "guidellm chat": (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
        | {"max_completion_tokens": 4, "stop": None, "ignore_eos": True},
    ),
    "no-op defaults": (
        "/v1/chat/completions",
        {"messages": ASK, "max_tokens": 4, "frequency_penalty": 0, "presence_penalty": 0.0}
        | {"logit_bias": {}, "response_format": {"type": "text"}, "tools": []}
        | {"tool_choice": "none", "parallel_tool_calls": True, "user": "u", "logprobs": False},
    ),
}


@pytest.mark.parametrize("client_name", list(CLIENT_DEFAULTS))
def test_what_real_clients_send_is_served(base_url, client_name):
    route, body = CLIENT_DEFAULTS[client_name]
    response = post(base_url, route, body)
    assert response.status_code == 200, response.text
    assert all(c["finish_reason"] for c in response.json()["choices"])


def test_guidellm_streams_get_usage_on_every_chunk(base_url):
    options = {"include_usage": True, "continuous_usage_stats": True}
    body = {"prompt": "hi", "max_tokens": 5, "ignore_eos": True, "stream": True}
    body["stream_options"] = options
    with httpx.stream("POST", f"{base_url}/v1/completions", json=body, timeout=30) as response:
        lines = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(line) for line in lines[:-1]]
    counts = [c["usage"]["completion_tokens"] for c in chunks if c["choices"]]
    assert counts == sorted(counts) and counts[-1] == 5 == chunks[-1]["usage"]["completion_tokens"]


# --- a list of prompts --------------------------------------------------------------------------


def test_a_list_of_prompts_gets_one_choice_per_prompt_and_sample(client):
    greedy = dict(model="tiny", max_tokens=6, temperature=0)
    alone = [client.completions.create(prompt=p, **greedy) for p in ("Once upon", "2+2=")]
    batch = client.completions.create(prompt=["Once upon", "2+2="], n=2, **greedy)
    assert [c.index for c in batch.choices] == [0, 1, 2, 3]  # prompt i, sample j: i * n + j
    texts = [c.text for c in batch.choices]
    assert texts == [alone[0].choices[0].text] * 2 + [alone[1].choices[0].text] * 2
    assert batch.usage.prompt_tokens == sum(r.usage.prompt_tokens for r in alone)
    assert batch.usage.completion_tokens == 2 * sum(r.usage.completion_tokens for r in alone)
    ids = client.completions.create(prompt=[[5, 6, 7], [8, 9]], **greedy)
    assert [c.index for c in ids.choices] == [0, 1]


def test_a_streamed_list_of_prompts_matches_the_plain_reply(client):
    kwargs = dict(model="tiny", prompt=["Once upon", "2+2=", "a"], max_tokens=8, temperature=0)
    whole = client.completions.create(**kwargs)
    stream = client.completions.create(
        **kwargs, stream=True, stream_options={"include_usage": True}
    )
    texts, finished = ["", "", ""], [0, 0, 0]
    for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] += choice.text
            finished[choice.index] += choice.finish_reason is not None
    assert texts == [c.text for c in whole.choices] and finished == [1, 1, 1]
    assert chunk.usage.completion_tokens == whole.usage.completion_tokens


def test_a_list_of_prompts_is_bounded_and_not_searched(base_url):
    body = {"prompt": ["a", "b", "c"], "n": 6}  # 18 completions; the server allows 16
    assert assert_error(post(base_url, "/v1/completions", body), 400)["param"] == "prompt"
    body = {"prompt": ["a", "b"], "tts": {"strategy": "majority", "n": 2}}
    assert assert_error(post(base_url, "/v1/completions", body), 400)["param"] == "prompt"
    for empty in ([], [""], ["a", ""], [[]]):
        assert_error(post(base_url, "/v1/completions", {"prompt": empty}), 400)


# --- models.retrieve ----------------------------------------------------------------------------


def test_models_retrieve(client):
    model = client.models.retrieve("tiny")
    assert model.id == "tiny" and model.object == "model"
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.models.retrieve("org/other-model")


# --- one request never hurts another ------------------------------------------------------------

BAD_REQUESTS = [
    {"prompt": [1_000_000]},
    {"prompt": [-1, 5]},
    {"prompt": [2**63]},
    {"prompt": "hi", "seed": 2**70},
    {"prompt": "hi", "stop_token_ids": [-3]},
    {"prompt": [True, 5]},  # JSON true is not token 1
    {"prompt": "hi", "stop": ["x"] * (MAX_STOPS + 1)},
    {"prompt": "hi", "stop_token_ids": [1] * (MAX_STOPS + 1)},
]


def test_bad_requests_fail_alone(base_url, engine):
    """Each bad request gets a 400 while the streamed and plain requests around it finish."""

    async def run() -> tuple[list, list]:
        async with openai.AsyncOpenAI(
            base_url=f"{base_url}/v1", api_key="x", max_retries=0
        ) as client:
            common = dict(model="tiny", max_tokens=16, temperature=0)
            common["extra_body"] = {"ignore_eos": True}

            async def streamed(prompt: str) -> list:
                stream = await client.completions.create(prompt=prompt, stream=True, **common)
                return [chunk async for chunk in stream]

            async def chat() -> object:
                messages = [{"role": "user", "content": "hi"}]
                return await client.chat.completions.create(messages=messages, **common)

            async def bad(body: dict) -> Exception | None:
                extra = {k: v for k, v in body.items() if k != "prompt"}
                try:
                    await client.completions.create(
                        model="tiny", prompt=body["prompt"], max_tokens=4, extra_body=extra
                    )
                except openai.APIStatusError as error:
                    return error
                return None

            goods = [streamed("Once upon"), chat(), streamed("2+2="), chat()]
            good_tasks = [asyncio.ensure_future(g) for g in goods]
            await asyncio.sleep(0.05)  # the good ones are generating when the bad ones arrive
            failures = await asyncio.gather(*(bad(body) for body in BAD_REQUESTS))
            return await asyncio.gather(*good_tasks), failures

    results, failures = asyncio.run(run())
    assert all(isinstance(f, openai.BadRequestError) for f in failures), failures
    for result in results:
        if isinstance(result, list):  # a stream: one finish, at the length limit, no error
            reasons = [c.choices[0].finish_reason for c in result if c.choices]
            assert reasons[-1] == "length" and not any(reasons[:-1])
        else:
            assert result.choices[0].finish_reason == "length"
            assert result.usage.completion_tokens == 16
    wait_for_idle(base_url, engine, within=2.0)


def test_a_failing_engine_step_ends_every_stream_with_an_error(base_url, engine, monkeypatch):
    """A fault injected into the real engine's forward pass (a test double for a bug that no
    validation catches: nothing a client sends can make a correct forward pass raise). Every
    request in flight gets an error, a stream as its last event before [DONE], and the server
    then serves the next requests on the same connections."""
    run = engine.runner.run
    calls = {"n": 0}

    def fail_once(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("injected fault")
        return run(*args, **kwargs)

    monkeypatch.setattr(engine.runner, "run", fail_once)
    body = {"prompt": "Once upon", "max_tokens": 40, "temperature": 0, "ignore_eos": True}

    async def run_both() -> tuple[list[str], httpx.Response]:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:

            async def stream() -> list[str]:
                async with http.stream(
                    "POST", "/v1/completions", json=body | {"stream": True}
                ) as r:
                    return [line async for line in r.aiter_lines() if line]

            return await asyncio.gather(stream(), http.post("/v1/completions", json=body))

    lines, plain = asyncio.run(run_both())
    assert calls["n"] >= 3
    assert lines[-1] == "data: [DONE]"
    error = json.loads(lines[-2].removeprefix("data: "))["error"]
    assert error["type"] == "server_error" and error["code"] == "internal_error"
    assert_error(plain, 500)
    monkeypatch.setattr(engine.runner, "run", run)
    wait_for_idle(base_url, engine, within=2.0)
    assert post(base_url, "/v1/completions", body | {"max_tokens": 4}).status_code == 200
