"""The native engine's sizes, checked once when the engine is built."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EngineConfig:
    """Sizes of the native engine.

    block_size: tokens per KV block; small blocks let search branches share more.
    num_blocks: KV blocks in the pool; None sizes the pool from kv_cache_gib.
    kv_cache_gib: memory for the KV cache, in GiB, when num_blocks is None; None: 1 GiB on
        CPU, 80% of the accelerator memory left after loading the weights.
    max_num_seqs: most sequences running at once.
    max_num_batched_tokens: most tokens computed in one step (the prefill chunk budget).
    check_integrity: verify the block bookkeeping after every step (tests; slow).
    speculative_tokens: draft tokens per decoding sequence and step, found by n-gram lookup in
        its prompt, its output and its peers' text and verified in the same forward pass
        (exact: the output is what plain decoding gives); 0 turns speculation off. On by
        default: it pays wherever `speculative_max_batch` lets it run (1.5-1.9x on the
        built-in model, benchmarks/speculative.py), and seeded samples came out the same there.
    speculative_max_batch: speculate only while at most this many sequences run. Verifying a
        draft computes its tokens whether or not they are kept, so it pays while a step costs
        about the same for several tokens per sequence as for one (small batches, small models),
        not where every token costs compute. Measured on CPU with 4-token drafts (2.5 tokens
        gained per verifying step): verifying costs 1.2x a decode step on the built-in model
        at every batch to 64, but 1.9x, 2.5x and 3.1x at batch 8, 16 and 32 on a model of
        Qwen2.5-0.5B's width (benchmarks/speculative.py); raise it for small models.
    """

    block_size: int = 16
    num_blocks: int | None = None
    kv_cache_gib: float | None = None
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 2048
    check_integrity: bool = False
    speculative_tokens: int = 4
    speculative_max_batch: int = 16

    def __post_init__(self) -> None:
        if self.block_size < 1 or (self.num_blocks is not None and self.num_blocks < 1):
            raise ValueError("block_size and num_blocks must be >= 1")
        if (self.kv_cache_gib is not None and self.kv_cache_gib <= 0) or min(
            self.max_num_seqs, self.max_num_batched_tokens
        ) < 1:
            raise ValueError("kv_cache_gib, max_num_seqs and max_num_batched_tokens must be > 0")
        if self.speculative_tokens < 0 or self.speculative_max_batch < 1:
            raise ValueError("speculative_tokens must be >= 0 and speculative_max_batch >= 1")
