"""`ignore_eos`: the native and hf backends generate on past the model's EOS to max_tokens."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from tts.engine import SamplingParams, load

PROMPT = "1 + 1 ="
GREEDY = SamplingParams(temperature=0, max_tokens=24)


def generate(backend, params: SamplingParams):
    return asyncio.run(backend.generate(PROMPT, params))[0]


@pytest.fixture(scope="module")
def eos_model(tiny_llama, tmp_path_factory) -> tuple[Path, list[int], int]:
    """tiny_llama with its EOS moved to a token that its greedy continuation of PROMPT makes
    (first) at position `at`, so greedy decoding meets that EOS there; with the folder, the
    whole greedy continuation and `at`."""
    free = generate(load(tiny_llama, backend="hf", device="cpu", dtype="float32"), GREEDY)
    assert free.finish_reason == "length"  # never met the real EOS
    tokens = free.token_ids
    at = next(i for i in range(3, len(tokens)) if tokens[i] not in tokens[:i])
    folder = tmp_path_factory.mktemp("eos-model")
    shutil.copytree(tiny_llama, folder, dirs_exist_ok=True)
    config = json.loads((folder / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(
        json.dumps(config | {"eos_token_id": tokens[at]})
    )
    return folder, tokens, at


@pytest.fixture(scope="module", params=["native", "hf"])
def backend(request, eos_model):
    options = {"block_size": 4, "num_blocks": 512} if request.param == "native" else {}
    return load(eos_model[0], backend=request.param, device="cpu", dtype="float32", **options)


def test_generation_ends_at_eos_unless_told_to_ignore_it(backend, eos_model):
    _, tokens, at = eos_model
    assert backend.eos_token_ids == {tokens[at]}
    stopped = generate(backend, GREEDY)
    assert stopped.token_ids == tokens[: at + 1]
    assert (stopped.finish_reason, stopped.stop_reason) == ("stop", None)
    ignoring = generate(backend, SamplingParams(temperature=0, max_tokens=24, ignore_eos=True))
    assert ignoring.token_ids == tokens and ignoring.finish_reason == "length"


def test_a_stop_token_still_ends_a_request_that_ignores_eos(backend, eos_model):
    _, tokens, _ = eos_model
    params = SamplingParams(
        temperature=0, max_tokens=24, ignore_eos=True, stop_token_ids=[tokens[0]]
    )
    ended = generate(backend, params)
    assert ended.token_ids == tokens[:1]
    assert (ended.finish_reason, ended.stop_reason) == ("stop", tokens[0])
