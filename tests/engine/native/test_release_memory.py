"""Freeing the native engine's KV cache for a trainer on the same device, and taking it back."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from tts.engine import SamplingParams, load
from tts.errors import TTSError

PROMPT = "Natalia sold clips to 48 of her friends in April and then half as many in May."
SEEDED = SamplingParams(temperature=0.8, max_tokens=24, n=3, seed=11)


def native(model):
    return load(
        model, backend="native", device="cpu", dtype="float32", block_size=4, num_blocks=128
    )


def token_ids(completions):
    return [c.token_ids for c in completions]


def test_release_frees_the_kv_cache_and_reclaim_gives_the_same_completions(tiny_llama):
    engine = native(tiny_llama)
    before = asyncio.run(engine.generate(PROMPT, SEEDED))
    stats = engine.stats()
    assert stats["blocks_cached"] > 0 and stats["kv_cache_bytes"] > 0
    cache = weakref.ref(engine.runner.kv_cache)

    engine.release_memory()
    gc.collect()
    assert engine.runner.kv_cache is None and cache() is None  # no reference keeps it alive
    released = engine.stats()
    assert released["kv_cache_bytes"] == 0 and released["blocks_cached"] == 0
    assert released["blocks_free"] == released["blocks_total"] == 128
    with pytest.raises(TTSError, match="reclaim_memory"):
        asyncio.run(engine.generate(PROMPT, SEEDED))

    engine.reclaim_memory()
    assert engine.stats()["kv_cache_bytes"] == stats["kv_cache_bytes"]
    after = asyncio.run(engine.generate(PROMPT, SEEDED))
    assert token_ids(after) == token_ids(before)
    assert after[0].cached_tokens == 0  # the prefix cache was forgotten with the KV
    engine.check_integrity()


def test_release_is_refused_while_a_request_or_a_stream_is_in_flight(tiny_llama):
    engine = native(tiny_llama)
    long = SamplingParams(temperature=0.8, max_tokens=64, n=2, seed=3)
    alone = asyncio.run(engine.generate(PROMPT, long))
    streamed_alone = asyncio.run(engine.generate(PROMPT + " Then", SEEDED))

    async def main():
        task = asyncio.ensure_future(engine.generate(PROMPT, long))
        await asyncio.sleep(0)  # the request is queued
        with pytest.raises(TTSError, match="in flight"):
            engine.release_memory()  # queued, not yet in the core
        while engine.stats()["blocks_in_use"] == 0:
            await asyncio.sleep(0.01)
        with pytest.raises(TTSError, match="in flight"):
            engine.release_memory()
        stream = engine.stream(PROMPT + " Then", SEEDED)
        first = await anext(stream)
        assert first[0].finish_reason is None  # still growing
        with pytest.raises(TTSError, match="in flight"):
            engine.release_memory()
        rest = [completions async for completions in stream]
        return await task, rest[-1]

    during, streamed = asyncio.run(main())
    assert token_ids(during) == token_ids(alone)
    assert token_ids(streamed) == token_ids(streamed_alone)
    assert engine.runner.kv_cache is not None
    engine.release_memory()  # once idle it goes through
    assert engine.stats()["kv_cache_bytes"] == 0
