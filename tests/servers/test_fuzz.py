"""Random and malformed requests against every route of a real server: none may get a 5xx, hang
or an answer that is not OpenAI's error object, and afterwards the server serves normally with
every KV block freed."""

from __future__ import annotations

import json
import string

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.servers.test_server import ASK, wait_for_idle
from tts.servers import ServerConfig, create_app

POSTS = ["/v1/chat/completions", "/v1/completions"]
GETS = ["/v1/models", "/v1/models/tiny", "/v1/models/x", "/health", "/metrics", "/v1", "/"]
VALID = {
    "/v1/chat/completions": {"messages": ASK, "max_tokens": 2},
    "/v1/completions": {"prompt": "Once upon", "max_tokens": 2},
}
FIELDS = [
    *["model", "n", "max_tokens", "temperature", "top_p", "stop", "seed", "stream"],
    *["stream_options", "user", "reasoning_effort", "top_k", "min_p", "stop_token_ids"],
    *["ignore_eos", "return_tokens_as_token_ids", "return_token_ids", "tts", "logprobs"],
    *["top_logprobs", "max_completion_tokens", "messages", "prompt", "echo", "tools"],
    *["response_format", "frequency_penalty", "logit_bias", "best_of", "suffix"],
]
# Texts that reach the tokenizer: a lone surrogate, a NUL, special tokens, a long run.
ODD_TEXT = ["\ud800x", "\udfff", "\x00", " ", "<|endoftext|><s></s>", "\u202e" * 3, "ab" * 400]
EXTREMES = [0, -1, 1, 2**31, 2**63, 2**64, -(2**63) - 1, 10**30, 1e308, -1e308, 0.5, 1e-300]

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from(EXTREMES)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["\ud800", "tiny", "majority", "beam", "low", "user", "text", ""])
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
TTS_OPTIONS = ["strategy", "n", "max_tokens", "expand_k", "beam_width", "seed", "return_tree"]


def encode(value) -> bytes:
    # NaN and Infinity are what Python writes and reads; other JSON parsers refuse them.
    return json.dumps(value).encode("utf-8", "surrogatepass")


@st.composite
def requests(draw) -> tuple[str, str, dict[str, str], bytes | None]:
    route = draw(st.sampled_from(POSTS * 8 + GETS + ["random"]))
    if route == "random":
        route = "/" + draw(st.text(string.ascii_letters + string.digits + "/._-%~", max_size=12))
    methods = ["POST"] * 9 + ["GET", "PUT", "DELETE"] if route in POSTS else ["GET"] * 3 + ["POST"]
    method = draw(st.sampled_from(methods))
    # One fault per body, so that most faults get past the others to the code they test.
    kind = draw(st.sampled_from(["field"] * 4 + ["text"] * 2 + ["tts", "json", "bytes", "deep"]))
    body = dict(VALID.get(route, VALID["/v1/completions"]), stream=draw(st.booleans()))
    if kind == "field":  # any field, known or not, set to a value of any type
        body[draw(st.sampled_from(FIELDS) | st.text(max_size=8))] = draw(values)
    elif kind == "text":  # the prompt, the message's content, or a stop string
        text = draw(st.sampled_from(ODD_TEXT) | st.text(max_size=30))
        target = draw(st.sampled_from(["main", "stop", "list"]))
        if target == "stop":
            body["stop"] = [text]
        elif route == "/v1/chat/completions":
            body["messages"] = [{"role": "user", "content": text}]
        else:
            body["prompt"] = [text, "ok"] if target == "list" else text
    elif kind == "tts":
        body["tts"] = draw(st.dictionaries(st.sampled_from(TTS_OPTIONS), values, max_size=3))
    content = encode(body)
    if kind == "json":
        content = encode(draw(values))
    elif kind == "deep":
        depth = draw(st.integers(1, 30_000))
        content = b'{"prompt": ' + b"[" * depth + b"]" * depth + b"}"
    elif kind == "bytes":
        content = draw(st.binary(max_size=200))
    content_type = draw(
        st.sampled_from(["application/json"] * 4 + ["text/plain", "", "application/json; x=1"])
    )
    headers = {"Content-Type": content_type} if content_type else {}
    return method, route, headers, content if method in ("POST", "PUT") else None


@pytest.fixture(scope="module")
def fuzz_url(servers, engine, tiny_llama) -> str:
    """Tight limits, so a body that happens to be valid finishes in a few tokens."""
    config = ServerConfig(
        model=str(tiny_llama),
        served_model_name="tiny",
        max_n=4,
        max_tokens_limit=4,
        default_max_tokens=2,
        max_body_bytes=64 * 1024,
        keepalive_seconds=0.05,
        reasoning_effort={
            level: {"strategy": "majority", "options": {"n": n}}
            for level, n in [("low", 2), ("medium", 3), ("high", 4)]
        },
    )
    return servers.start(create_app(engine, None, config))


def check(response: httpx.Response, body: bytes) -> None:
    status = response.status_code
    assert status < 500, (status, body[:300], response.text[:300])
    if status >= 400:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]
    elif response.headers["content-type"].startswith("text/event-stream"):
        lines = [line for line in response.text.splitlines() if line.startswith("data: ")]
        assert lines[-1] == "data: [DONE]", response.text[-300:]
        assert '"server_error"' not in response.text, response.text[-300:]


def test_random_and_malformed_requests(fuzz_url, engine):
    sent = 0
    with httpx.Client(base_url=fuzz_url, timeout=20) as client:

        @settings(
            max_examples=520,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(requests())
        def one(request) -> None:
            nonlocal sent
            method, route, headers, content = request
            response = client.request(method, route, content=content, headers=headers)
            sent += 1
            check(response, content or b"")

        one()
        normal = client.post("/v1/completions", json=VALID["/v1/completions"])
        assert normal.status_code == 200 and normal.json()["choices"][0]["finish_reason"]
    assert sent >= 500
    wait_for_idle(fuzz_url, engine, within=2.0)
