"""The `hf` reference backend, driven through `tts.engine.load` on real tiny model folders."""

from __future__ import annotations

import asyncio
import math

import pytest
import torch

from tests.engine.reference import transformers_prompt_logprobs
from tts.engine import SamplingParams, load
from tts.engine.backend import encode_prompt
from tts.errors import TTSError

PROMPTS = ["What is 7 * 8?", "Natalia sold clips to 48 of her friends in April.", "x"]


@pytest.fixture(scope="module")
def backend(tiny_llama):
    return load(tiny_llama, backend="hf", device="cpu", dtype="float32")


def chat(backend, text: str) -> str:
    return backend.tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
    )


def greedy_by_hand(model, ids: list[int], steps: int) -> list[int]:
    """Greedy decoding with full forward passes and no cache or padding: the ground truth."""
    ids = list(ids)
    out = []
    with torch.no_grad():
        for _ in range(steps):
            token = model(torch.tensor([ids])).logits[0, -1].argmax().item()
            out.append(token)
            ids.append(token)
    return out


def run(coroutine):
    return asyncio.run(coroutine)


def test_concurrent_greedy_requests_match_unbatched_greedy(backend):
    params = SamplingParams(temperature=0, max_tokens=12)
    prompts = [chat(backend, p) for p in PROMPTS]

    async def main():
        return await asyncio.gather(*(backend.generate(p, params) for p in prompts))

    results = run(main())
    for prompt, (completion,) in zip(prompts, results):
        ids = encode_prompt(backend.tokenizer, prompt)
        expected = greedy_by_hand(backend.model, ids, len(completion.token_ids))
        assert completion.token_ids == expected
        assert completion.prompt_tokens == len(ids)
        assert completion.cached_tokens == 0


def test_chat_prompt_keeps_a_single_bos(backend):
    ids = encode_prompt(backend.tokenizer, chat(backend, "hi"))
    bos = backend.tokenizer.bos_token_id
    assert ids[0] == bos and ids[1] != bos


def test_n_samples_and_length_finish(backend):
    params = SamplingParams(temperature=1.0, max_tokens=6, n=5, seed=1)
    completions = run(backend.generate(chat(backend, "hi"), params))
    assert len(completions) == 5
    for c in completions:
        assert c.finish_reason in ("stop", "length")
        if c.finish_reason == "length":
            assert len(c.token_ids) == 6
    assert len({tuple(c.token_ids) for c in completions}) > 1  # samples differ


def test_seeded_request_is_reproducible_whatever_runs_beside_it(backend):
    prompt = chat(backend, PROMPTS[0])
    params = SamplingParams(temperature=1.0, max_tokens=10, n=3, seed=1234)
    alone = run(backend.generate(prompt, params))

    async def crowded():
        noise = [
            backend.generate(chat(backend, p), SamplingParams(max_tokens=10, n=2)) for p in PROMPTS
        ]
        results = await asyncio.gather(*noise, backend.generate(prompt, params))
        return results[-1]

    again = run(crowded())
    assert [c.token_ids for c in again] == [c.token_ids for c in alone]
    other_seed = run(backend.generate(prompt, SamplingParams(**{**vars(params), "seed": 99})))
    assert [c.token_ids for c in other_seed] != [c.token_ids for c in alone]


def test_stop_string_is_cut_from_text_but_its_tokens_are_kept(backend):
    prompt = chat(backend, PROMPTS[1])
    free = run(backend.generate(prompt, SamplingParams(temperature=0, max_tokens=40)))[0]
    # Stop at a piece of text the model is known to produce, past its first few characters.
    stop = free.text[5:8]
    assert len(stop) == 3
    cut = run(backend.generate(prompt, SamplingParams(temperature=0, max_tokens=40, stop=[stop])))
    completion = cut[0]
    assert completion.finish_reason == "stop" and completion.stop_reason == stop
    assert free.stop_reason is None
    assert completion.text == free.text[: free.text.find(stop)]
    assert stop not in completion.text
    decoded = backend.tokenizer.decode(completion.token_ids, skip_special_tokens=True)
    assert stop in decoded and stop not in backend.tokenizer.decode(completion.token_ids[:-1])
    assert completion.token_ids == free.token_ids[: len(completion.token_ids)]


def test_logprobs_are_normalised_and_include_the_sampled_token(backend):
    params = SamplingParams(temperature=0, max_tokens=5, logprobs=3)
    (completion,) = run(backend.generate(chat(backend, "hi"), params))
    assert len(completion.logprobs) == len(completion.token_ids)
    for token, entry in zip(completion.token_ids, completion.logprobs):
        assert token in entry and len(entry) == 3  # greedy: the sampled token is the best one
        assert entry[token] == max(entry.values())
        assert sum(math.exp(v) for v in entry.values()) <= 1.0 + 1e-5


def test_token_id_prompts_are_used_as_given(backend):
    ids = encode_prompt(backend.tokenizer, chat(backend, "hi"))
    params = SamplingParams(temperature=0, max_tokens=4)
    from_ids = run(backend.generate(ids, params))[0]
    from_text = run(backend.generate(chat(backend, "hi"), params))[0]
    assert from_ids.token_ids == from_text.token_ids


def test_cancelled_request_does_not_disturb_the_others(backend):
    async def main():
        params = SamplingParams(temperature=0, max_tokens=8)
        doomed = asyncio.ensure_future(backend.generate(chat(backend, "a"), params))
        kept = asyncio.ensure_future(backend.generate(chat(backend, "b"), params))
        await asyncio.sleep(0)
        doomed.cancel()
        return await kept, doomed

    kept, doomed = run(main())
    assert doomed.cancelled()
    assert len(kept[0].token_ids) > 0


def test_qwen_family_without_bos(tiny_qwen):
    backend = load(tiny_qwen, backend="hf", device="cpu")
    assert backend.tokenizer.bos_token_id is None
    (completion,) = run(backend.generate("1 + 1 =", SamplingParams(temperature=0, max_tokens=4)))
    expected = greedy_by_hand(backend.model, backend.tokenizer("1 + 1 =").input_ids, 4)
    assert completion.token_ids == expected[: len(completion.token_ids)]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"model": "/nonexistent/model"}, "model folder not found"),
        ({"backend": "nope"}, "unknown backend"),
        ({"dtype": "float8"}, "unknown dtype"),
    ],
)
def test_load_errors_name_the_problem(tiny_llama, kwargs, message):
    with pytest.raises(TTSError, match=message):
        load(**{"model": tiny_llama, "backend": "hf", **kwargs})


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(TTSError, match="no config.json"):
        load(tmp_path)


def test_prompt_logprobs_equal_transformers(backend, tiny_llama):
    text = PROMPTS[1]
    ids = encode_prompt(backend.tokenizer, text)
    params = SamplingParams(temperature=0, max_tokens=2, n=2, prompt_logprobs=1)

    async def main():
        return await asyncio.gather(
            backend.generate(text, params), backend.generate(text, SamplingParams())
        )

    scored, plain = run(main())
    expected = transformers_prompt_logprobs(tiny_llama, ids)
    for completion in scored:
        entries = completion.prompt_logprobs
        assert entries[0] is None and len(entries) == len(ids)
        ours = [entry[token] for entry, token in zip(entries[1:], ids[1:])]
        assert max(abs(a - b) for a, b in zip(ours, expected)) < 1e-4
        assert all(1 <= len(entry) <= 2 for entry in entries[1:])
    assert plain[0].prompt_logprobs is None


@pytest.mark.parametrize(
    "prompt, params",
    [
        ([1000000], SamplingParams()),
        ([5, -1], SamplingParams()),
        ([5], SamplingParams(stop_token_ids=[-3])),
    ],
)
def test_token_ids_outside_the_vocabulary_are_refused_before_batching(backend, prompt, params):
    good = SamplingParams(temperature=0, max_tokens=4)

    async def main():
        return await asyncio.gather(
            backend.generate(prompt, params), backend.generate("x", good), return_exceptions=True
        )

    bad, kept = run(main())
    assert isinstance(bad, TTSError) and "not a token id of this model" in str(bad)
    assert len(kept[0].token_ids) > 0


def test_a_failed_batch_fails_its_requests_and_the_next_batch_runs(backend, monkeypatch):
    """A fault injected into transformers' generate stands for any bug or device error: every
    request of that batch gets it, none waits forever, and later requests are served."""
    real, calls = backend.model.generate, []

    def fail_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("injected fault")
        return real(*args, **kwargs)

    monkeypatch.setattr(backend.model, "generate", fail_once)
    params = SamplingParams(temperature=0, max_tokens=4)

    async def main():
        together = asyncio.gather(
            *(backend.generate(p, params) for p in PROMPTS), return_exceptions=True
        )
        failed = await asyncio.wait_for(together, 60)
        return failed, await asyncio.wait_for(backend.generate(PROMPTS[0], params), 60)

    failed, later = run(main())
    assert all(isinstance(r, RuntimeError) and str(r) == "injected fault" for r in failed)
    assert len(later[0].token_ids) > 0
