"""The native model runner against the Hugging Face model: same logits, same greedy tokens."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, GPT2Config

from tts.engine.native import packed_linear
from tts.engine.native.model_runner import ModelRunner, SeqChunk
from tts.errors import TTSError

BLOCK_SIZE = 4
NUM_BLOCKS = 96
ATOL = 1e-4
CPU = torch.device("cpu")


@pytest.fixture(scope="module", params=["llama", "qwen2", "qwen3"])
def family_dir(request: pytest.FixtureRequest) -> Path:
    fixture = {"llama": "tiny_llama", "qwen2": "tiny_qwen", "qwen3": "tiny_qwen3"}[request.param]
    return request.getfixturevalue(fixture)


@pytest.fixture(scope="module")
def hf_model(family_dir: Path) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(family_dir, dtype=torch.float32).eval()


def runner_for(model_dir: Path, dtype: torch.dtype = torch.float32) -> ModelRunner:
    return ModelRunner(model_dir, CPU, dtype, num_blocks=NUM_BLOCKS, block_size=BLOCK_SIZE)


def random_ids(n: int, vocab: int, seed: int = 0) -> list[int]:
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def hf_logits(model: torch.nn.Module, ids: list[int]) -> torch.Tensor:
    """Logits [len(ids), vocab] of a full forward with no cache: the ground truth."""
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


class Driver:
    """Feeds fixed token sequences to a runner in chunks, with blocks from a shuffled pool."""

    def __init__(self, runner: ModelRunner, seqs: list[list[int]], seed: int = 0) -> None:
        self.runner, self.seqs = runner, seqs
        self.free = list(range(NUM_BLOCKS))
        random.Random(seed).shuffle(self.free)
        self.tables: list[list[int]] = [[] for _ in seqs]
        self.done = [0] * len(seqs)

    def step(self, work: list[tuple[int, int]]) -> dict[tuple[int, int], torch.Tensor]:
        """Run (seq, n_tokens) chunks in one call; logits keyed by (seq, position of last token)."""
        chunks = []
        for seq, n in work:
            start = self.done[seq]
            while len(self.tables[seq]) * BLOCK_SIZE < start + n:
                self.tables[seq].append(self.free.pop())
            tokens = self.seqs[seq][start : start + n]
            chunks.append(SeqChunk(tokens, start, list(self.tables[seq]), needs_logits=True))
            self.done[seq] += n
        logits = self.runner.run(chunks)
        return {(seq, self.done[seq] - 1): row for (seq, _), row in zip(work, logits)}


def assert_matches(model, seqs, got: dict[tuple[int, int], torch.Tensor]) -> float:
    refs = [hf_logits(model, ids) for ids in seqs]
    diff = max((row - refs[seq][pos]).abs().max().item() for (seq, pos), row in got.items())
    assert diff < ATOL
    return diff


def test_one_chunk(family_dir, hf_model):
    runner = runner_for(family_dir)
    ids = random_ids(50, runner.config.vocab_size)
    assert_matches(hf_model, [ids], Driver(runner, [ids]).step([(0, 50)]))


def test_chunked_prefill(family_dir, hf_model):
    runner = runner_for(family_dir)
    ids = random_ids(50, runner.config.vocab_size)
    driver, got = Driver(runner, [ids]), {}
    for n in (7, 13, 30):
        got |= driver.step([(0, n)])
    assert_matches(hf_model, [ids], got)


def test_mixed_batch_with_shuffled_blocks(family_dir, hf_model):
    runner = runner_for(family_dir)
    seqs = [
        random_ids(n, runner.config.vocab_size, seed) for seed, n in enumerate([41, 25, 9, 14, 6])
    ]
    driver, got = Driver(runner, seqs, seed=1), {}
    schedule = [
        [(0, 20), (1, 23), (2, 5)],
        [(1, 1), (0, 19), (2, 4), (3, 12)],
        [(3, 1), (0, 1), (4, 3), (1, 1)],
        [(4, 1), (3, 1), (0, 1)],
        [(4, 2)],
    ]
    for work in schedule:
        got |= driver.step(work)
    assert driver.done == [len(ids) for ids in seqs]
    assert_matches(hf_model, seqs, got)


def test_greedy_equals_hf_generate(family_dir, hf_model):
    runner = runner_for(family_dir)
    prompt = random_ids(10, runner.config.vocab_size, seed=3)
    expected = hf_model.generate(
        torch.tensor([prompt]), max_new_tokens=20, do_sample=False, eos_token_id=None
    )[0, len(prompt) :].tolist()
    tokens, table = list(prompt), list(range(NUM_BLOCKS - 1, NUM_BLOCKS - 9, -1))
    start = 0
    while len(tokens) < len(prompt) + 20:
        logits = runner.run([SeqChunk(tokens[start:], start, table, needs_logits=True)])
        start = len(tokens)
        tokens.append(int(logits[0].argmax()))
    assert tokens[len(prompt) :] == expected


# Small original contexts, so the tiny head's frequencies straddle every scaling regime; yarn's
# factor must equal max_position_embeddings (4096) / original_max_position_embeddings.
ROPE_VARIANTS = {
    "llama3": {
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 32,
    },
    "linear": {"factor": 4.0},
    "yarn": {"factor": 4.0, "original_max_position_embeddings": 1024},
}


@pytest.mark.parametrize("rope_type", sorted(ROPE_VARIANTS))
def test_rope_scaling_matches_hf(tiny_llama, tmp_path, rope_type):
    model_dir = shutil.copytree(tiny_llama, tmp_path / rope_type)
    config = json.loads((model_dir / "config.json").read_text())
    config["rope_parameters"] = {"rope_type": rope_type, "rope_theta": 10000.0}
    config["rope_parameters"] |= ROPE_VARIANTS[rope_type]
    (model_dir / "config.json").write_text(json.dumps(config))
    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    runner = runner_for(model_dir)
    ids = random_ids(60, runner.config.vocab_size)
    driver, got = Driver(runner, [ids]), {}
    for n in (40, 1, 19):
        got |= driver.step([(0, n)])
    assert_matches(hf, [ids], got)


def test_copy_block_forks_a_partial_block(tiny_llama):
    runner = runner_for(tiny_llama)
    ids = random_ids(11, runner.config.vocab_size)
    original = [5, 9, 2]  # 10 prompt tokens: the third block holds two of its four slots
    runner.run([SeqChunk(ids[:10], 0, original, needs_logits=False)])
    runner.copy_block(2, 7)
    fork = [5, 9, 7]
    # The original moves on first, writing into its own third block; the fork must not see it.
    runner.run([SeqChunk([ids[0]], 10, original, needs_logits=True)])
    forked = runner.run([SeqChunk([ids[10]], 10, fork, needs_logits=True)])
    fresh = runner.run([SeqChunk(ids, 0, [11, 12, 13], needs_logits=True)])
    torch.testing.assert_close(forked, fresh, atol=1e-6, rtol=0)


def test_bf16_close_to_fp32(tiny_llama):
    full_runner = runner_for(tiny_llama)
    ids = random_ids(30, full_runner.config.vocab_size)
    chunk = SeqChunk(ids, 0, list(range(8)), needs_logits=True)
    full = full_runner.run([chunk])
    half = runner_for(tiny_llama, torch.bfloat16).run([chunk])
    assert half.dtype == torch.float32 and torch.isfinite(half).all()
    assert (half - full).abs().max().item() < 0.05 * full.abs().max().item()


def test_sharded_checkpoint_loads(tiny_llama, tmp_path):
    hf = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    hf.save_pretrained(tmp_path, max_shard_size="40KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    ids = random_ids(12, hf.config.vocab_size)
    got = runner_for(tmp_path).run([SeqChunk(ids, 0, [0, 1, 2], needs_logits=True)])
    assert (got[0] - hf_logits(hf, ids)[-1]).abs().max().item() < ATOL


def test_missing_weight_is_named(tiny_llama, tmp_path):
    shutil.copy(tiny_llama / "config.json", tmp_path)
    weights = load_file(tiny_llama / "model.safetensors")
    del weights["model.layers.1.mlp.up_proj.weight"]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(TTSError, match=r"model\.layers\.1\.mlp\.up_proj\.weight"):
        runner_for(tmp_path)


def test_unsupported_model_type(tmp_path):
    GPT2Config().save_pretrained(tmp_path)
    with pytest.raises(TTSError, match="llama, qwen2, qwen3"):
        runner_for(tmp_path)


def test_kv_bytes_per_block(tiny_qwen3):
    runner = runner_for(tiny_qwen3)
    per_block = ModelRunner.kv_bytes_per_block(runner.config, BLOCK_SIZE, torch.float32)
    assert per_block * NUM_BLOCKS == runner.kv_cache.numel() * runner.kv_cache.element_size()


@pytest.mark.skipif(not packed_linear.can_pack(CPU), reason="this torch has no oneDNN")
def test_packed_linear_layers_give_the_same_logits(family_dir, hf_model, monkeypatch):
    # The tiny models' layers are below the size packing starts at; pack them all.
    monkeypatch.setattr(packed_linear, "MIN_PACKED_WEIGHTS", 0)
    runner = runner_for(family_dir)
    assert isinstance(runner.model.lm_head, packed_linear.PackedLinear)
    assert isinstance(runner.model.model.layers[0].self_attn.qkv_proj, packed_linear.PackedLinear)
    seqs = [random_ids(13, hf_model.config.vocab_size, seed=s) for s in range(2)]
    driver = Driver(runner, seqs)
    got = driver.step([(0, 9), (1, 13)])
    got |= driver.step([(0, 4)])
    assert assert_matches(hf_model, seqs, got) < ATOL
