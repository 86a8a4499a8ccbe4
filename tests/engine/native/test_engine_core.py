"""The engine core stepped by hand, with no event loop: what the async backend does, in a loop."""

from __future__ import annotations

import asyncio

import pytest
import torch

from tts.engine import SamplingParams, load
from tts.engine.native.config import EngineConfig
from tts.engine.native.engine_core import EngineCore

OPTIONS = dict(block_size=4, num_blocks=512, check_integrity=True)
TEXTS = [
    "Natalia sold clips to 48 of her friends in April and then half as many in May",
    "What is 7 * 8? First, 7 * 8 = 56.",
]


def core_of(model) -> EngineCore:
    return EngineCore(model, torch.device("cpu"), torch.float32, EngineConfig(**OPTIONS))


def run_to_completion(core: EngineCore, requests: list[tuple[list[int], SamplingParams]]):
    """Add every request, then step until none is left; each one's completions, in order."""
    ids = [core.add(prompt_ids, params) for prompt_ids, params in requests]
    finished = {}
    while core.has_work:
        finished |= core.step().finished
    return [finished[request_id] for request_id in ids]


@pytest.mark.parametrize("family", ["tiny_llama", "tiny_qwen3"])
def test_stepping_the_core_gives_what_the_async_backend_gives(request, family):
    model = request.getfixturevalue(family)
    backend = load(model, backend="native", device="cpu", dtype="float32", **OPTIONS)
    core = core_of(model)
    prompts = [backend.tokenizer(text).input_ids for text in TEXTS]
    plain = (prompts[1], SamplingParams(temperature=0, max_tokens=20))
    (free,) = run_to_completion(core, [plain])
    assert free == asyncio.run(backend.generate(*plain))
    seeded = SamplingParams(temperature=0.8, top_p=0.9, max_tokens=16, n=3, seed=7, logprobs=2)
    stop = free[0].text[8:11]
    greedy = SamplingParams(temperature=0, max_tokens=20, stop=[stop], prompt_logprobs=1)
    requests = list(zip(prompts, (seeded, greedy)))

    async def concurrently():
        return await asyncio.gather(*(backend.generate(ids, p) for ids, p in requests))

    expected = asyncio.run(concurrently())  # both join the backend's first step, as here
    assert run_to_completion(core, requests) == expected
    assert len({tuple(c.token_ids) for c in expected[0]}) == 3
    assert (expected[1][0].finish_reason, expected[1][0].stop_reason) == ("stop", stop)
    assert core.stats() == backend.stats() and core.stats()["blocks_in_use"] == 0


def test_a_request_aborted_between_steps_frees_its_blocks_and_the_others_go_on(tiny_llama):
    core = core_of(tiny_llama)
    ids = core.tokenizer(TEXTS[0]).input_ids
    params = SamplingParams(temperature=0, max_tokens=12, n=2)
    (alone,) = run_to_completion(core, [(ids, params)])
    doomed, kept = core.add(ids, SamplingParams(max_tokens=200, n=2)), core.add(ids, params)
    for _ in range(3):
        grown = core.step().grown
    assert doomed in grown and kept in grown
    assert len(core.completions(doomed)[0].token_ids) == 3
    core.abort(doomed)
    finished = {}
    while core.has_work:
        output = core.step()
        assert doomed not in output.grown
        finished |= output.finished
    assert list(finished) == [kept]
    assert [c.token_ids for c in finished[kept]] == [c.token_ids for c in alone]
    assert core.stats()["blocks_in_use"] == 0
