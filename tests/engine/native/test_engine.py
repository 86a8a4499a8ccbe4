"""The native backend end to end: real tiny models, real engine, checked against `hf`."""

from __future__ import annotations

import asyncio

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.engine.reference import transformers_prompt_logprobs
from tts.engine import SamplingParams, load
from tts.errors import TTSError

WORDS = "Natalia sold clips to 48 of her friends in April and then half as many in May".split()


def prompts(count: int, length: int = 40) -> list[str]:
    """Distinct prompts of several blocks each (block size 4 in these tests)."""
    return [
        " ".join(WORDS[(i + j) % len(WORDS)] for j in range(length // 3 + i)) for i in range(count)
    ]


def native(model, **options):
    defaults = dict(
        device="cpu", dtype="float32", block_size=4, num_blocks=512, check_integrity=True
    )
    return load(model, backend="native", **(defaults | options))


def generate_all(backend, texts, params):
    async def main():
        return await asyncio.gather(*(backend.generate(t, params) for t in texts))

    return asyncio.run(main())


@pytest.fixture(scope="module", params=["tiny_llama", "tiny_qwen", "tiny_qwen3"])
def family(request):
    model = request.getfixturevalue(request.param)
    return native(model), load(model, backend="hf", device="cpu")


def test_greedy_equals_hf_alone_and_32_at_once(family):
    engine, reference = family
    greedy = SamplingParams(temperature=0, max_tokens=24)
    texts = prompts(32)
    expected = [r[0].token_ids for r in generate_all(reference, texts, greedy)]
    alone = [generate_all(engine, [t], greedy)[0][0].token_ids for t in texts[:3]]
    together = [r[0].token_ids for r in generate_all(engine, texts, greedy)]
    assert alone == expected[:3]
    assert together == expected
    assert max(len(engine.tokenizer(t).input_ids) for t in texts) > 40  # > 10 blocks
    assert engine.stats()["blocks_in_use"] == 0


def test_repeated_and_extended_prompts_hit_the_cache(tiny_llama):
    engine = native(tiny_llama)
    params = SamplingParams(temperature=0, max_tokens=4)
    text = prompts(1, 60)[0]
    first = generate_all(engine, [text], params)[0][0]
    assert first.cached_tokens == 0
    again = generate_all(engine, [text], params)[0][0]
    full_blocks = (first.prompt_tokens - 1) // 4 * 4  # one token is always recomputed
    assert again.cached_tokens == full_blocks
    extended = generate_all(engine, [text + " and more words after it"], params)[0][0]
    assert extended.cached_tokens == first.prompt_tokens // 4 * 4
    # Generated tokens are cached too: the prompt extended by the first answer finds them.
    continued = generate_all(engine, [engine.tokenizer(text).input_ids + first.token_ids], params)
    assert continued[0][0].cached_tokens == (first.prompt_tokens + 4 - 1) // 4 * 4


def test_sixteen_samples_of_a_long_prompt_compute_its_prefill_once(tiny_llama):
    # Speculation off: verifying a draft also computes the tokens it rejects.
    engine = native(tiny_llama, block_size=16, num_blocks=256, speculative_tokens=0)
    prompt = engine.tokenizer(" ".join(WORDS * 100)).input_ids[:1000]
    assert len(prompt) == 1000
    params = SamplingParams(temperature=1.0, max_tokens=8, n=16, seed=0)
    completions = asyncio.run(engine.generate(prompt, params))
    stats = engine.stats()
    assert len(completions) == 16 and len({tuple(c.token_ids) for c in completions}) > 1
    assert stats["forks"] == 15
    generated = sum(len(c.token_ids) for c in completions)
    # 1000 prompt tokens once, then each sample's tokens but its last (never fed back).
    assert stats["computed_tokens"] == 1000 + generated - 16
    assert [c.cached_tokens for c in completions] == [0] + [1000] * 15


def test_a_pool_too_small_for_the_load_preempts_and_still_matches_hf(tiny_llama):
    engine = native(tiny_llama, num_blocks=40)
    reference = load(tiny_llama, backend="hf", device="cpu")
    greedy = SamplingParams(temperature=0, max_tokens=30)
    texts = prompts(12, 30)
    results = generate_all(engine, texts, greedy)
    stats = engine.stats()
    assert stats["preemptions"] > 0
    assert [r[0].token_ids for r in results] == [
        r[0].token_ids for r in generate_all(reference, texts, greedy)
    ]
    assert stats["blocks_in_use"] == 0
    assert stats["blocks_free"] + stats["blocks_cached"] == stats["blocks_total"] == 40


def test_aborted_requests_free_their_blocks(tiny_llama):
    engine = native(tiny_llama)

    async def main():
        tasks = [
            asyncio.ensure_future(engine.generate(t, SamplingParams(max_tokens=200, n=2)))
            for t in prompts(6)
        ]
        while engine.stats()["blocks_in_use"] == 0:
            await asyncio.sleep(0.01)
        for task in tasks[:4]:
            task.cancel()
        done = await asyncio.gather(*tasks[4:])
        await asyncio.sleep(0.05)  # let the step loop apply the aborts
        return tasks, done

    tasks, done = asyncio.run(main())
    assert all(t.cancelled() for t in tasks[:4]) and all(len(d) == 2 for d in done)
    stats = engine.stats()
    assert stats["blocks_in_use"] == 0 and stats["running"] == stats["waiting"] == 0


def test_seeded_samples_do_not_depend_on_the_batch(tiny_qwen):
    engine = native(tiny_qwen)
    seeded = SamplingParams(temperature=0.8, top_p=0.9, max_tokens=12, n=3, seed=5)
    text = prompts(1)[0]
    alone = generate_all(engine, [text], seeded)[0]
    crowd = generate_all(engine, [text] + prompts(8), seeded)[0]
    assert [c.token_ids for c in alone] == [c.token_ids for c in crowd]
    assert len({tuple(c.token_ids) for c in alone}) == 3


def test_stop_strings_and_stop_tokens_match_hf(tiny_llama):
    engine = native(tiny_llama)
    reference = load(tiny_llama, backend="hf", device="cpu")
    text = prompts(1)[0]
    free = generate_all(engine, [text], SamplingParams(temperature=0, max_tokens=40))[0][0]
    stop = free.text[6:9]
    by_string = SamplingParams(temperature=0, max_tokens=40, stop=[stop])
    by_token = SamplingParams(temperature=0, max_tokens=40, stop_token_ids=[free.token_ids[5]])
    for params in (by_string, by_token):
        ours = generate_all(engine, [text], params)[0][0]
        theirs = generate_all(reference, [text], params)[0][0]
        assert (ours.text, ours.token_ids, ours.finish_reason, ours.stop_reason) == (
            theirs.text,
            theirs.token_ids,
            theirs.finish_reason,
            theirs.stop_reason,
        )
        assert ours.finish_reason == "stop" and len(ours.token_ids) < len(free.token_ids)
        assert ours.stop_reason == (stop if params is by_string else free.token_ids[5])


def test_logprobs_match_hf(tiny_llama):
    engine = native(tiny_llama)
    reference = load(tiny_llama, backend="hf", device="cpu")
    params = SamplingParams(temperature=0, max_tokens=6, logprobs=2)
    ours = generate_all(engine, ["1 + 1 ="], params)[0][0]
    theirs = generate_all(reference, ["1 + 1 ="], params)[0][0]
    assert len(ours.logprobs) == 6
    for a, b in zip(ours.logprobs, theirs.logprobs):
        assert a.keys() == b.keys()
        assert all(abs(a[k] - b[k]) < 1e-4 for k in a)


def test_requests_that_cannot_fit_are_refused_with_the_reason(tiny_llama):
    engine = native(tiny_llama, num_blocks=8)
    with pytest.raises(TTSError, match="needs 9 KV blocks but the pool has 8"):
        asyncio.run(engine.generate([1] * 20, SamplingParams(max_tokens=16)))
    with pytest.raises(TTSError, match="prompt is empty"):
        asyncio.run(engine.generate([], SamplingParams()))


def test_pool_is_sized_from_a_memory_budget(tiny_llama):
    from tts.engine.native.model_runner import ModelRunner

    engine = load(tiny_llama, backend="native", device="cpu", kv_cache_gib=0.01, block_size=8)
    per_block = ModelRunner.kv_bytes_per_block(engine.runner.config, 8, engine.runner.dtype)
    assert engine.stats()["blocks_total"] == int(0.01 * 2**30) // per_block


def test_stream_grows_to_what_generate_returns(tiny_llama):
    engine = native(tiny_llama)
    text = prompts(1)[0]
    free = generate_all(engine, [text], SamplingParams(temperature=0, max_tokens=30))[0][0]
    params = SamplingParams(temperature=0, max_tokens=30, n=2, stop=[free.text[10:14]])
    final = generate_all(engine, [text], params)[0]

    async def collect():
        return [snapshot async for snapshot in engine.stream(text, params)]

    snapshots = asyncio.run(collect())
    assert len(snapshots) > 3
    assert [c.text for c in snapshots[-1]] == [c.text for c in final]
    assert all(c.finish_reason for c in snapshots[-1])
    for earlier, later in zip(snapshots, snapshots[1:]):
        for a, b in zip(earlier, later):
            # Text only grows, and never shows what the stop string will cut off.
            assert b.text.startswith(a.text) and final[0].text.startswith(a.text)
    assert engine.stats()["blocks_in_use"] == 0


def test_closing_a_stream_early_aborts_the_request(tiny_llama):
    engine = native(tiny_llama)

    async def main():
        stream = engine.stream(prompts(1)[0], SamplingParams(max_tokens=200, n=3))
        async for snapshot in stream:
            if len(snapshot[0].token_ids) >= 5:
                break
        await stream.aclose()
        await asyncio.sleep(0.05)

    asyncio.run(main())
    stats = engine.stats()
    assert stats["blocks_in_use"] == 0 and stats["running"] == stats["waiting"] == 0


@pytest.mark.parametrize("packed", [False, True], ids=["in-place", "repacked"])
def test_weights_pushed_in_process_replace_the_old_ones_and_the_prefix_cache(
    tiny_qwen, tmp_path, monkeypatch, packed
):
    """What an RL loop does after each update: the engine then samples from the new policy,
    exactly as transformers does with those weights, and no KV of the old policy is reused."""
    if packed:  # every layer packed for oneDNN: the weights go into a rebuilt model
        monkeypatch.setattr("tts.engine.native.packed_linear.MIN_PACKED_WEIGHTS", 1)
    engine = native(tiny_qwen)
    assert engine.runner.packed == packed
    greedy = SamplingParams(temperature=0, max_tokens=6, logprobs=3)
    text = prompts(1, 60)[0]
    before = generate_all(engine, [text], greedy)[0][0]
    trained = AutoModelForCausalLM.from_pretrained(tiny_qwen, dtype=torch.float32)
    torch.manual_seed(0)
    with torch.no_grad():
        for param in trained.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    engine.update_weights(trained.state_dict().items())
    after = generate_all(engine, [text], greedy)[0][0]
    assert after.cached_tokens == 0
    trained.save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(tiny_qwen).save_pretrained(tmp_path)
    expected = generate_all(load(tmp_path, backend="hf", device="cpu"), [text], greedy)[0][0]
    assert after.token_ids == expected.token_ids
    for ours, theirs, old in zip(after.logprobs, expected.logprobs, before.logprobs):
        assert ours.keys() == theirs.keys()
        assert all(abs(ours[k] - theirs[k]) < 1e-4 for k in ours)
        assert any(abs(ours[k] - old.get(k, 0.0)) > 1e-3 for k in ours)

    async def update_while_generating():
        task = asyncio.ensure_future(engine.generate(text, greedy))
        await asyncio.sleep(0)  # the request is queued
        with pytest.raises(TTSError, match="no request is in flight"):
            engine.update_weights(trained.state_dict().items())
        await task

    asyncio.run(update_while_generating())


@pytest.mark.parametrize("budget", [2048, 7], ids=["one-step", "chunked-prefill"])
def test_prompt_logprobs_equal_transformers_even_for_a_cached_prompt(tiny_llama, budget):
    engine = native(tiny_llama, max_num_batched_tokens=budget)
    text = prompts(1, 60)[0]
    ids = engine.tokenizer(text).input_ids
    generate_all(engine, [text], SamplingParams(max_tokens=2))  # the prompt is now cached
    scored = SamplingParams(temperature=0, max_tokens=3, n=2, prompt_logprobs=2)
    (first, second), (plain,) = (
        generate_all(engine, [text, text], scored)[0],
        generate_all(engine, [text], SamplingParams(max_tokens=3))[0],
    )
    assert first.prompt_logprobs[0] is None and len(first.prompt_logprobs) == len(ids)
    expected = transformers_prompt_logprobs(tiny_llama, ids)
    ours = [entry[token] for entry, token in zip(first.prompt_logprobs[1:], ids[1:])]
    assert max(abs(a - b) for a, b in zip(ours, expected)) < 1e-4
    assert all(2 <= len(entry) <= 3 for entry in first.prompt_logprobs[1:])  # token + 2 best
    assert second.prompt_logprobs == first.prompt_logprobs
    assert first.cached_tokens == 0 and plain.cached_tokens > 0 and plain.prompt_logprobs is None
    assert engine.stats()["blocks_in_use"] == 0


@pytest.mark.parametrize(
    "prompt, params, message",
    [
        ([1000000], SamplingParams(), "prompt token 1000000 is not a token id"),
        ([-1, 5], SamplingParams(), "prompt token -1"),
        ([2**63], SamplingParams(), "prompt token 9223372036854775808"),
        ([5, True], SamplingParams(), "prompt token True"),
        ([5, 6], SamplingParams(stop_token_ids=[7, 10**6]), "stop_token_ids entry 1000000"),
    ],
)
def test_token_ids_outside_the_vocabulary_fail_alone(tiny_llama, prompt, params, message):
    engine = native(tiny_llama)
    good = SamplingParams(temperature=0, max_tokens=8)
    text = prompts(1)[0]
    expected = generate_all(engine, [text], good)[0][0].token_ids

    async def main():
        streamed = engine.stream(text, good)
        together = asyncio.gather(
            engine.generate(text, good),
            engine.generate(prompt, params),
            anext(streamed),
            return_exceptions=True,
        )
        plain, bad, _ = await asyncio.wait_for(together, 30)
        final = [snapshot async for snapshot in streamed][-1]
        return plain, bad, final

    plain, bad, final = asyncio.run(main())
    assert isinstance(bad, TTSError) and message in str(bad)
    assert plain[0].token_ids == final[0].token_ids == expected
    assert engine.stats()["blocks_in_use"] == 0


@pytest.mark.parametrize("site", ["model runner", "scheduler"])
def test_a_failed_step_fails_every_request_in_flight_and_the_engine_goes_on(
    tiny_llama, monkeypatch, site
):
    """A fault is injected because no input can cause one once requests are validated: it
    stands for a bug, a kernel error or an out-of-memory in the device thread (model runner),
    or on the loop's side after it (the scheduler's bookkeeping)."""
    engine = native(tiny_llama)
    params = SamplingParams(temperature=0, max_tokens=6)
    texts = prompts(4)
    expected = [r[0].token_ids for r in generate_all(engine, texts, params)]
    target, name = (
        (engine.runner, "run") if site == "model runner" else (engine.core.scheduler, "postprocess")
    )
    real, calls = getattr(target, name), []

    def fail_once_on_the_third_call(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("injected fault")
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, fail_once_on_the_third_call)

    async def main():
        async def consume_stream():
            return [s async for s in engine.stream(texts[0], SamplingParams(max_tokens=50, n=2))]

        work = [engine.generate(t, SamplingParams(max_tokens=50, n=2)) for t in texts]
        results = await asyncio.wait_for(
            asyncio.gather(*work, consume_stream(), return_exceptions=True), 30
        )
        stats = engine.stats()
        later = await asyncio.wait_for(
            asyncio.gather(*(engine.generate(t, params) for t in texts)), 30
        )
        return results, stats, later

    results, stats, later = asyncio.run(main())
    assert len(calls) >= 3
    assert all(isinstance(r, RuntimeError) and str(r) == "injected fault" for r in results)
    assert stats["blocks_in_use"] == 0 and stats["running"] == stats["waiting"] == 0
    assert [r[0].token_ids for r in later] == expected
    assert engine.stats()["blocks_in_use"] == 0


def test_prompt_logprobs_survive_preemption(tiny_llama):
    engine = native(tiny_llama, num_blocks=40)
    texts = prompts(10, 30)
    params = SamplingParams(temperature=0, max_tokens=30, prompt_logprobs=0)
    results = generate_all(engine, texts, params)
    assert engine.stats()["preemptions"] > 0
    for text, (completion,) in zip(texts, results):
        ids = engine.tokenizer(text).input_ids
        expected = transformers_prompt_logprobs(tiny_llama, ids)
        ours = [entry[token] for entry, token in zip(completion.prompt_logprobs[1:], ids[1:])]
        assert len(completion.prompt_logprobs) == len(ids)
        assert max(abs(a - b) for a, b in zip(ours, expected)) < 1e-4
    assert engine.stats()["blocks_in_use"] == 0
