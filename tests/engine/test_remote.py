"""The `remote` backend against a real `tts serve` in a subprocess, and against a stub server.

The stub is a test double: a few lines of FastAPI that answer with scripted status codes, so
retries, backoff and error reporting can be checked without making a real server fail.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tests.engine.served import free_port, served
from tts.cli import main
from tts.data.datasets import load_dataset
from tts.engine import SamplingParams, load
from tts.engine.backend import encode_prompt
from tts.engine.remote import PlainPrompts
from tts.errors import TTSError
from tts.prompts import build_prompt
from tts.search import make_strategy

PROBLEM = "What is 7 * 8?"


def run(coroutine):
    return asyncio.run(coroutine)


# --- against a real `tts serve` ---------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`tts serve` on the tiny model, in its own process, on a free local port."""
    port = free_port()
    command = [sys.executable, "-m", "tts.cli", "serve", "--model", str(tiny_llama)]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with served(command, port, log, start_seconds=60) as url:
        yield url


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


def test_token_counts_are_the_servers(remote, server):
    prompt = chat(remote.tokenizer, PROBLEM)
    params = SamplingParams(n=3, max_tokens=8, seed=1)
    completions = run(remote.generate(prompt, params))
    # The same seeded request, asked of the server directly: its own counts.
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="none")
    answer = client.completions.create(
        model=remote.model_name, prompt=prompt, n=3, max_tokens=8, seed=1, temperature=1.0
    )
    assert [c.text for c in completions] == [choice.text for choice in answer.choices]
    assert [len(c.token_ids) for c in completions] == [
        choice.model_extra["tts"]["completion_tokens"] for choice in answer.choices
    ]
    assert sum(len(c.token_ids) for c in completions) == answer.usage.completion_tokens
    assert {c.prompt_tokens for c in completions} == {answer.usage.prompt_tokens}
    assert answer.usage.prompt_tokens == len(encode_prompt(remote.tokenizer, prompt))


def test_token_ids_are_the_generated_ones(remote, native):
    prompt = chat(native.tokenizer, PROBLEM)
    params = SamplingParams(temperature=0, max_tokens=16)
    (expected,) = run(native.generate(prompt, params))
    (got,) = run(remote.generate(prompt, params))
    # The server's ids, EOS and stop tokens included: re-tokenizing the text could not say.
    assert got.token_ids == expected.token_ids


def test_server_returns_token_ids_when_asked_also_streamed(server):
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="none")
    model = client.models.list().data[0].id
    ask = {"model": model, "prompt": PROBLEM, "max_tokens": 12, "temperature": 0}
    plain = client.completions.create(**ask).choices[0]
    assert "token_ids" not in (plain.model_extra or {})
    whole = client.completions.create(extra_body={"return_token_ids": True}, **ask)
    ids = whole.choices[0].model_extra["token_ids"]
    assert len(ids) == whole.choices[0].model_extra["tts"]["completion_tokens"] > 0
    chunks = client.completions.create(stream=True, extra_body={"return_token_ids": True}, **ask)
    streamed = [i for chunk in chunks for c in chunk.choices for i in c.model_extra["token_ids"]]
    assert streamed == ids
    with pytest.raises(openai.BadRequestError, match="return_token_ids"):
        client.completions.create(extra_body={"return_token_ids": True, "tts": {"n": 2}}, **ask)


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


def test_cli_bench_with_a_tokenizer_prompts_through_its_chat_template(server, tiny_llama, tmp_path):
    tokenizer = load(server, backend="remote", tokenizer=tiny_llama).tokenizer
    (problem,) = load_dataset("synth:arith:1", limit=1)
    runs = {
        "chat": (["--tokenizer", str(tiny_llama)], build_prompt(tokenizer, problem.problem)),
        "plain": ([], build_prompt(PlainPrompts(), problem.problem)),
    }
    small = ["--dataset", "synth:arith:1", "--limit", "1", "--n", "1", "--max-tokens", "4"]
    counts = {}
    for name, (flags, prompt) in runs.items():
        out = tmp_path / name
        main(["bench", "--backend", "remote", "--model", server, *flags, *small, "--out", str(out)])
        (row,) = [json.loads(line) for line in (out / "results.jsonl").open()]
        # What the server counted is the prompt it was sent: templated only given a tokenizer.
        counts[name] = row["usage"]["prompt_tokens"]
        assert counts[name] == len(encode_prompt(tokenizer, prompt))
    assert counts["chat"] != counts["plain"]


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
        self.answer: Callable[[dict], dict] | None = None  # the 200's body, from the request
        self.refuse: str | None = None  # a field answered with a 400 naming it
        self.times: list[float] = []
        self.bodies: list[dict] = []
        self.app = FastAPI()
        self.app.get("/v1/models")(lambda: {"object": "list", "data": [{"id": "stub-model"}]})
        self.app.post("/v1/completions")(self.complete)

    async def complete(self, request: Request) -> JSONResponse:
        self.times.append(time.monotonic())
        self.bodies.append(await request.json())
        if self.refuse in self.bodies[-1]:
            error = {"message": f"unknown field: {self.refuse}", "param": self.refuse}
            return JSONResponse({"error": error}, status_code=400)
        if self.script:
            status, headers = self.script.pop(0)
            error = {"message": f"scripted {status}", "type": "stub", "code": status}
            return JSONResponse({"error": error}, status_code=status, headers=headers)
        if self.answer is not None:
            return JSONResponse(self.answer(self.bodies[-1]))
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


def vllm_answer(body: dict) -> dict:
    """What vLLM's /v1/completions answers with `return_token_ids` (its protocol's
    CompletionResponseChoice): 16 ids for a text that re-tokenizes to fewer."""
    choices = [
        {"index": i, "text": "42", "finish_reason": "length", "stop_reason": None}
        | {"token_ids": list(range(100 + i, 116 + i)), "prompt_token_ids": [1, 2, 3, 4]}
        for i in range(body["n"])
    ]
    usage = {"prompt_tokens": 4, "completion_tokens": 16 * body["n"], "total_tokens": 0}
    usage["prompt_tokens_details"] = {"cached_tokens": 3}
    return {"object": "text_completion", "choices": choices, "usage": usage}


def test_stub_vllm_token_ids_and_cached_tokens_are_taken_as_given(stub, tiny_llama):
    double, url = stub
    double.answer = vllm_answer
    backend = load(url, backend="remote", tokenizer=tiny_llama, model_name="m")
    completions = run(backend.generate("hi", SamplingParams(n=2, max_tokens=16)))
    assert double.bodies[0]["return_token_ids"] is True
    assert [c.token_ids for c in completions] == [list(range(100, 116)), list(range(101, 117))]
    assert [(c.prompt_tokens, c.cached_tokens) for c in completions] == [(4, 3), (4, 3)]


def without_ids(body: dict) -> dict:
    answer = vllm_answer(body)
    for choice in answer["choices"]:
        del choice["token_ids"], choice["prompt_token_ids"]
    return answer


def test_stub_usage_is_exact_for_one_choice_and_recounting_warns(stub, tiny_llama):
    double, url = stub
    double.answer = without_ids
    backend = load(url, backend="remote", tokenizer=tiny_llama, model_name="m")
    (one,) = run(backend.generate("hi", SamplingParams(max_tokens=16)))
    assert len(one.token_ids) == 16 and one.prompt_tokens == 4
    # Two choices and only their sum: the last resort is the text re-tokenized, said aloud.
    with pytest.warns(UserWarning, match="re-tokenizing"):
        two = run(backend.generate("hi", SamplingParams(n=2, max_tokens=16)))
    recounted = backend.tokenizer("42", add_special_tokens=False).input_ids
    assert [c.token_ids for c in two] == [recounted, recounted]


def test_stub_server_refusing_return_token_ids_is_asked_without_it_from_then_on(stub):
    double, url = stub
    double.answer, double.refuse = without_ids, "return_token_ids"
    backend = load(url, backend="remote", model_name="m")
    (first,) = run(backend.generate("hi", SamplingParams(max_tokens=16)))
    (second,) = run(backend.generate("hi", SamplingParams(max_tokens=16)))
    assert len(first.token_ids) == len(second.token_ids) == 16
    assert ["return_token_ids" in body for body in double.bodies] == [True, False, False]


def test_prompt_logprobs_are_refused(stub):
    _, url = stub
    backend = load(url, backend="remote", model_name="m")
    with pytest.raises(TTSError, match="prompt log-probabilities"):
        run(backend.generate("hi", SamplingParams(prompt_logprobs=1)))


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
    # A refused field other than return_token_ids is the caller's to fix: no second try.
    double.refuse = "top_k"
    with pytest.raises(TTSError, match="HTTP 400: unknown field: top_k"):
        run(backend.generate("hi", SamplingParams(top_k=5)))
    assert len(double.times) == 2


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
