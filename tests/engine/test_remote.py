"""The `remote` backend against a real `tts serve` in a subprocess, and against a stub server.

The stub is a test double: a few lines of FastAPI that answer with scripted status codes, so
retries, backoff and error reporting can be checked without making a real server fail.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tts.engine import SamplingParams, load
from tts.engine.backend import encode_prompt
from tts.engine.remote import PlainPrompts
from tts.errors import TTSError
from tts.search import make_strategy

PROBLEM = "What is 7 * 8?"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(coroutine):
    return asyncio.run(coroutine)


# --- against a real `tts serve` ---------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`tts serve` on the tiny model, in its own process, on a free local port."""
    port = free_port()
    log = (tmp_path_factory.mktemp("serve") / "serve.log").open("w+")
    process = subprocess.Popen(
        [sys.executable, "-m", "tts.cli", "serve", "--model", str(tiny_llama)]
        + ["--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"tts serve did not come up:\n{log.read()[-3000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture(scope="module")
def remote(server: str, tiny_llama: Path):
    return load(server, backend="remote", tokenizer=tiny_llama)


@pytest.fixture(scope="module")
def native(tiny_llama: Path):
    return load(tiny_llama, backend="native", device="cpu", dtype="float32")


def chat(tokenizer, text: str) -> str:
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
    )


def kv_blocks_in_use(url: str) -> float:
    """The server's `tts_kv_blocks_in_use` gauge, from its Prometheus /metrics."""
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("tts_kv_blocks_in_use"):
            return float(line.split()[-1])
    raise AssertionError("no tts_kv_blocks_in_use in /metrics")


def test_returns_n_completions_with_counts(remote):
    prompt = chat(remote.tokenizer, PROBLEM)
    completions = run(remote.generate(prompt, SamplingParams(n=3, max_tokens=8, seed=1)))
    assert len(completions) == 3
    for c in completions:
        assert c.finish_reason in ("stop", "length")
        assert c.prompt_tokens == len(encode_prompt(remote.tokenizer, prompt))
        assert c.token_ids == remote.tokenizer(c.text, add_special_tokens=False).input_ids


def test_greedy_text_equals_native_in_process(remote, native):
    params = SamplingParams(temperature=0, max_tokens=16)
    for problem in (PROBLEM, "Natalia sold clips to 48 of her friends in April."):
        prompt = chat(native.tokenizer, problem)
        (expected,) = run(native.generate(prompt, params))
        (as_text,) = run(remote.generate(prompt, params))
        ids = encode_prompt(native.tokenizer, prompt)
        (as_ids,) = run(remote.generate(ids, params))
        # Token ids re-tokenized from text may split differently at the edges: compare texts.
        assert as_text.text == as_ids.text == expected.text
        assert as_text.finish_reason == expected.finish_reason


def test_logprobs_carry_the_generated_token_ids(remote, native):
    prompt = chat(native.tokenizer, PROBLEM)
    params = SamplingParams(temperature=0, max_tokens=12, logprobs=2)
    (expected,) = run(native.generate(prompt, params))
    (got,) = run(remote.generate(prompt, params))
    # Asked for logprobs, the server names tokens by id: token_ids are exact, EOS included.
    assert got.token_ids == expected.token_ids
    for mine, theirs in zip(got.logprobs, expected.logprobs):
        assert mine.keys() == theirs.keys()
        assert all(abs(mine[t] - theirs[t]) < 1e-4 for t in mine)


def test_stop_string_ends_text_and_is_reported(remote):
    prompt = chat(remote.tokenizer, PROBLEM)
    greedy = SamplingParams(temperature=0, max_tokens=24)
    (full,) = run(remote.generate(prompt, greedy))
    stop = next(full.text[i : i + 2] for i in range(4, len(full.text)) if full.text[i].strip())
    (cut,) = run(remote.generate(prompt, SamplingParams(temperature=0, max_tokens=24, stop=[stop])))
    assert cut.text == full.text[: full.text.index(stop)]
    assert (cut.finish_reason, cut.stop_reason) == ("stop", stop)


def test_seeded_samples_reproduce(remote):
    prompt = chat(remote.tokenizer, PROBLEM)

    def texts(seed: int) -> list[str]:
        params = SamplingParams(temperature=1.0, n=3, max_tokens=12, seed=seed)
        return [c.text for c in run(remote.generate(prompt, params))]

    first = texts(7)
    assert texts(7) == first
    assert texts(8) != first


def test_strategy_runs_against_the_served_model(remote):
    strategy = make_strategy("majority", n=4, max_tokens=16, seed=0)
    result = run(strategy.solve(PROBLEM, remote))
    assert len(result.candidates) == 4
    assert result.usage.prompt_tokens > 0 and result.usage.completion_tokens > 0


def test_without_tokenizer_prompts_are_plain_and_counts_come_from_the_server(server):
    backend = load(server, backend="remote")
    assert isinstance(backend.tokenizer, PlainPrompts)
    result = run(make_strategy("majority", n=2, max_tokens=8, seed=0).solve(PROBLEM, backend))
    assert all(0 < c.tokens <= 8 for c in result.candidates)


def test_cancelled_generate_frees_its_kv_blocks(remote, server):
    prompt = chat(remote.tokenizer, PROBLEM)
    params = SamplingParams(n=4, max_tokens=3000, seed=0)

    async def start_then_cancel() -> None:
        task = asyncio.create_task(remote.generate(prompt, params))
        deadline = time.monotonic() + 20
        while await asyncio.to_thread(kv_blocks_in_use, server) == 0:
            assert time.monotonic() < deadline, "the request never took KV blocks"
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(start_then_cancel())
    deadline = time.monotonic() + 10
    while kv_blocks_in_use(server) > 0:
        assert time.monotonic() < deadline, "the server kept the cancelled request's KV blocks"
        time.sleep(0.05)


# --- against a stub server (a test double) ------------------------------------------------------


class Stub:
    """Answers POST /v1/completions with the scripted statuses, then 200; notes when each
    call came."""

    def __init__(self) -> None:
        self.script: list[tuple[int, dict[str, str]]] = []
        self.times: list[float] = []
        self.bodies: list[dict] = []
        self.app = FastAPI()
        self.app.get("/v1/models")(lambda: {"object": "list", "data": [{"id": "stub-model"}]})
        self.app.post("/v1/completions")(self.complete)

    async def complete(self, request: Request) -> JSONResponse:
        self.times.append(time.monotonic())
        self.bodies.append(await request.json())
        if self.script:
            status, headers = self.script.pop(0)
            error = {"message": f"scripted {status}", "type": "stub", "code": status}
            return JSONResponse({"error": error}, status_code=status, headers=headers)
        n = self.bodies[-1]["n"]
        choices = [
            {"index": i, "text": f"answer {i}", "finish_reason": "length", "stop_reason": None}
            | {"tts": {"completion_tokens": 5 + i, "cached_tokens": 2, "stop_reason": None}}
            for i in range(n)
        ]
        usage = {"prompt_tokens": 7, "completion_tokens": 11, "total_tokens": 18}
        return JSONResponse({"object": "text_completion", "choices": choices, "usage": usage})


@pytest.fixture
def stub() -> Iterator[tuple[Stub, str]]:
    double = Stub()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(double.app, host="127.0.0.1", port=port, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    yield double, f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(timeout=5)


def test_stub_default_model_and_per_choice_counts(stub):
    double, url = stub
    backend = load(url, backend="remote", backoff=0.01)
    completions = run(backend.generate("hi", SamplingParams(n=2, top_k=5, stop=["\n"])))
    body = double.bodies[0]
    assert body["model"] == "stub-model" and body["prompt"] == "hi"
    assert (body["top_k"], body["stop"]) == (5, ["\n"])
    assert "min_p" not in body and "seed" not in body  # unset vLLM extensions are not sent
    assert [len(c.token_ids) for c in completions] == [5, 6]
    assert [(c.prompt_tokens, c.cached_tokens) for c in completions] == [(7, 2), (7, 2)]


def test_stub_retries_5xx_with_backoff_then_succeeds(stub):
    double, url = stub
    double.script = [(503, {}), (503, {})]
    backend = load(url, backend="remote", model_name="m", backoff=0.2)
    (completion,) = run(backend.generate("hi", SamplingParams()))
    assert completion.text == "answer 0"
    assert len(double.times) == 3
    # Waits of at least half of 0.2 s, then of 0.4 s: exponential backoff with jitter.
    gaps = [b - a for a, b in zip(double.times, double.times[1:])]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2


def test_stub_honours_retry_after_on_429(stub):
    double, url = stub
    double.script = [(429, {"Retry-After": "0.5"})]
    backend = load(url, backend="remote", model_name="m", backoff=0.01)
    start = time.monotonic()
    run(backend.generate("hi", SamplingParams()))
    assert len(double.times) == 2
    assert time.monotonic() - start >= 0.5


def test_stub_client_error_is_not_retried(stub):
    double, url = stub
    double.script = [(400, {})]
    backend = load(url, backend="remote", model_name="m", backoff=0.01)
    with pytest.raises(TTSError, match="HTTP 400: scripted 400"):
        run(backend.generate("hi", SamplingParams()))
    assert len(double.times) == 1


def test_stub_gives_up_after_retries(stub):
    double, url = stub
    double.script = [(500, {})] * 3
    backend = load(url, backend="remote", model_name="m", retries=2, backoff=0.01)
    with pytest.raises(TTSError, match="HTTP 500.*gave up after 3 attempts"):
        run(backend.generate("hi", SamplingParams()))
    assert len(double.times) == 3


def test_server_down_is_one_line_error():
    backend = load(f"http://127.0.0.1:{free_port()}", backend="remote", retries=1, backoff=0.01)
    with pytest.raises(TTSError, match="ConnectError.*gave up after 2 attempts") as error:
        run(backend.generate("hi", SamplingParams()))
    assert "\n" not in str(error.value)


def test_bad_url_and_missing_tokenizer_are_user_errors(tmp_path):
    with pytest.raises(TTSError, match="http:// or https://"):
        load("localhost:8000", backend="remote")
    with pytest.raises(TTSError, match="tokenizer folder not found"):
        load("http://127.0.0.1:1", backend="remote", tokenizer=tmp_path / "none")
