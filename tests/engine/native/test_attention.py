"""Paged attention against plain attention over each sequence's own contiguous keys."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tts.engine.native.attention import AttentionMetadata, paged_attention

BLOCK_SIZE = 4
NUM_BLOCKS = 64
HEADS, KV_HEADS, HEAD_DIM = 6, 2, 8
CPU = torch.device("cpu")


def reference(q, k_cache, v_cache, query_lens, context_lens, tables):
    """Each sequence alone: its keys laid out contiguously, a causal mask, fused attention."""
    out, row = [], 0
    for q_len, ctx_len, table in zip(query_lens, context_lens, tables):
        slots = [table[p // BLOCK_SIZE] * BLOCK_SIZE + p % BLOCK_SIZE for p in range(ctx_len)]
        k = k_cache.flatten(0, 1)[slots].transpose(0, 1)
        v = v_cache.flatten(0, 1)[slots].transpose(0, 1)
        positions = torch.arange(ctx_len - q_len, ctx_len)
        mask = torch.arange(ctx_len)[None, :] <= positions[:, None]
        o = F.scaled_dot_product_attention(
            q[row : row + q_len].transpose(0, 1), k, v, attn_mask=mask, enable_gqa=True
        )
        out.append(o.transpose(0, 1))
        row += q_len
    return torch.cat(out)


# Block tables: two groups sharing prefixes of different lengths (as the n samples of one prompt
# and the branches of one problem do), a sequence alone, a pair sharing only a first block that
# is still being written (too short to share), and a prefill chunk on a shared prefix.
CASES = {
    "samples": (
        [1] * 4,
        [13, 14, 15, 16],
        [[0, 1, 2, 3], [0, 1, 2, 4], [0, 1, 2, 5], [0, 1, 2, 6]],
    ),
    "mixed": (
        [1, 1, 1, 1, 3, 1],
        [9, 11, 18, 18, 7, 3],
        [[7, 8, 9], [7, 8, 10], [20, 21, 22, 23, 24], [20, 21, 25, 26, 27], [7, 30], [40]],
    ),
    "alone": ([1, 1], [5, 2], [[3, 4], [5]]),
    "scattered": ([1, 1, 1], [14, 15, 13], [[9, 2, 5, 11], [9, 2, 5, 12], [9, 2, 5, 13]]),
    # Short chunks of several lengths and contexts (drafts being verified, a short prompt), which
    # attend together, padded, beside a decode query and a long prefill chunk.
    "short": (
        [5, 1, 3, 2, 4, 20],
        [13, 9, 30, 3, 4, 22],
        [
            [0, 1, 2, 3],
            [4, 5, 6],
            [7, 8, 9, 10, 11, 12, 13, 14],
            [15],
            [22],
            [16, 17, 18, 19, 20, 21],
        ],
    ),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", sorted(CASES))
def test_paged_attention_equals_attention_over_each_sequence_alone(case, dtype):
    query_lens, context_lens, tables = CASES[case]
    generator = torch.Generator().manual_seed(0)
    shape = (NUM_BLOCKS, BLOCK_SIZE, KV_HEADS, HEAD_DIM)
    k_cache = torch.randn(shape, generator=generator).to(dtype)
    v_cache = torch.randn(shape, generator=generator).to(dtype)
    q = torch.randn(sum(query_lens), HEADS, HEAD_DIM, generator=generator).to(dtype)
    meta = AttentionMetadata.build(query_lens, context_lens, tables, BLOCK_SIZE, CPU)
    got = paged_attention(q, k_cache, v_cache, meta, HEAD_DIM**-0.5)
    want = reference(q.float(), k_cache.float(), v_cache.float(), query_lens, context_lens, tables)
    tolerance = 1e-5 if dtype is torch.float32 else 2e-2
    torch.testing.assert_close(got.float(), want, atol=tolerance, rtol=tolerance)


def test_queries_sharing_blocks_are_grouped_over_their_full_shared_blocks():
    query_lens, context_lens, tables = CASES["mixed"]
    plan = AttentionMetadata.build(query_lens, context_lens, tables, BLOCK_SIZE, CPU).decode
    # Flat rows 0, 1 share blocks 7, 8; rows 2, 3 share 20, 21; row 7 (after the 3-token
    # prefill chunk) is alone, and comes last.
    assert plan.rows.tolist() == [0, 1, 2, 3, 7]
    assert [(p.start, p.end, p.blocks) for p in plan.prefixes] == [
        (0, 2, slice(7, 9)),
        (2, 4, slice(20, 22)),
    ]
    assert plan.alone == 4
    assert plan.own_blocks.tolist()[0][:1] == [9]
