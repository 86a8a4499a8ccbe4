"""Attention over the paged KV cache, and the per-step metadata that says where each token sits.

The runner builds one `AttentionMetadata` per step from plain lists (every tensor of it made
once, shared by all layers). Each layer then writes its new keys and values into the cache
(`write_kv`) and attends (`paged_attention`).

Decoding sequences (one new token each: most of a search's steps) attend in one batched pass,
and search makes them share long prefixes: the n samples of one prompt, or the branches of one
problem. Sequences whose block tables start with the same blocks form a group, and the group's
queries attend to the shared prefix together, as one matrix product over keys gathered once,
instead of each sequence gathering its own copy of them (cascade attention, as in FlashInfer
and vLLM's cascade kernels: the prefix and the own part are two softmax pieces merged exactly).
Each sequence's own part, the blocks after its group's prefix, is gathered into one padded batch.
Prefill chunks attend one sequence at a time with PyTorch's fused attention, but for short ones
(a speculative draft being verified, the last tokens of a prompt found in the prefix cache):
those attend together, in one fused call over their padded contexts, since a call per sequence
would cost more than the few tokens it computes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Chunks of at most this many new tokens attend together (`ShortChunks`); longer ones alone.
SHORT_CHUNK = 16


@dataclass
class SharedPrefix:
    """Decode queries `start:end` (in plan order) share `blocks`, all full, so every key in them
    is visible: a slice of the cache when the block ids run consecutively (no copy), else [B]
    int64 ids."""

    start: int
    end: int
    blocks: slice | torch.Tensor


@dataclass
class DecodePlan:
    """How the step's one-token queries attend. They are taken in plan order: each group of
    queries sharing a prefix together, then the queries in no group (from `alone` on).

    rows: [S] int64, where the decode queries, in plan order, sit in the flat batch.
    own_blocks: [S, B] int64, each query's blocks after its group's shared prefix (all of its
        blocks when it is in no group), right-padded with block 0.
    own_visible: [S, B * block_size] bool, which of those slots hold its context.
    """

    rows: torch.Tensor
    own_blocks: torch.Tensor
    own_visible: torch.Tensor
    prefixes: list[SharedPrefix]
    alone: int


@dataclass
class PrefillSpan:
    """q_len new tokens from row `start` of the flat batch, the last of ctx_len context keys
    that live in `blocks` [ceil(ctx_len / block_size)] int64. `mask` [q_len, ctx_len] bool says
    which keys each query sees, None when they are all new (plain causal attention)."""

    start: int
    q_len: int
    ctx_len: int
    blocks: torch.Tensor
    mask: torch.Tensor | None


@dataclass
class ShortChunks:
    """Chunks of 2 to SHORT_CHUNK new tokens, C of them, attending together; Q is the longest.

    rows: [C, Q] int64, each chunk's rows in the flat batch, padded by repeating its last.
    valid: [C, Q] bool, the rows that are not padding; targets: rows[valid].
    blocks: [C, B] int64, each chunk's blocks, right-padded with block 0.
    mask: [C, 1, Q, B * block_size] bool, the keys each query sees (its position and before).
    """

    rows: torch.Tensor
    valid: torch.Tensor
    targets: torch.Tensor
    blocks: torch.Tensor
    mask: torch.Tensor


@dataclass
class AttentionMetadata:
    """slot_mapping: [T] int64, the cache slot (block_id * block_size + offset) of each new
    token of the flat batch; then the decode plan, the short chunks and the prefill spans."""

    slot_mapping: torch.Tensor
    decode: DecodePlan | None
    short: ShortChunks | None
    prefills: list[PrefillSpan]

    @classmethod
    def build(
        cls,
        query_lens: list[int],
        context_lens: list[int],
        block_tables: list[list[int]],
        block_size: int,
        device: torch.device,
    ) -> AttentionMetadata:
        """One step's metadata: per sequence, in flat-batch order, its new tokens (the last
        query_len of its context_len) and its block ids."""
        slots: list[int] = []
        starts: list[int] = []
        for q_len, ctx_len, table in zip(query_lens, context_lens, block_tables):
            starts.append(len(slots))
            slots += [
                table[p // block_size] * block_size + p % block_size
                for p in range(ctx_len - q_len, ctx_len)
            ]
        decoding = [i for i, q_len in enumerate(query_lens) if q_len == 1]
        prefills = [
            PrefillSpan(
                starts[i],
                q_len,
                context_lens[i],
                _tensor(block_tables[i][: -(-context_lens[i] // block_size)], device),
                _causal_mask(q_len, context_lens[i], device) if q_len < context_lens[i] else None,
            )
            for i, q_len in enumerate(query_lens)
            if q_len > SHORT_CHUNK
        ]
        short = [i for i, q_len in enumerate(query_lens) if 1 < q_len <= SHORT_CHUNK]
        short_chunks = None
        if short:
            short_chunks = _short_chunks(
                [starts[i] for i in short],
                [query_lens[i] for i in short],
                [context_lens[i] for i in short],
                [block_tables[i] for i in short],
                block_size,
                device,
            )
        decode = None
        if decoding:
            decode = _decode_plan(
                [starts[i] for i in decoding],
                [context_lens[i] for i in decoding],
                [block_tables[i] for i in decoding],
                block_size,
                device,
            )
        return cls(_tensor(slots, device), decode, short_chunks, prefills)


def _tensor(data: list, device: torch.device) -> torch.Tensor:
    return torch.tensor(data, dtype=torch.int64, device=device)


def _short_chunks(
    starts: list[int],
    query_lens: list[int],
    context_lens: list[int],
    tables: list[list[int]],
    block_size: int,
    device: torch.device,
) -> ShortChunks:
    """The short chunks' metadata, from their flat-batch starts, lengths and block tables."""
    width = max(query_lens)
    used = [table[: -(-ctx_len // block_size)] for table, ctx_len in zip(tables, context_lens)]
    num_blocks = max(len(blocks) for blocks in used)
    # Padding repeats a chunk's last query, so that no row of the mask is empty.
    offsets = [[min(j, q_len - 1) for j in range(width)] for q_len in query_lens]
    rows = _tensor([[s + o for o in row] for s, row in zip(starts, offsets)], device)
    positions = _tensor(
        [[c - q + o for o in row] for c, q, row in zip(context_lens, query_lens, offsets)],
        device,
    )
    valid = torch.arange(width, device=device) < _tensor(query_lens, device)[:, None]
    keys = torch.arange(num_blocks * block_size, device=device)
    return ShortChunks(
        rows=rows,
        valid=valid,
        targets=rows[valid],
        blocks=_tensor([b + [0] * (num_blocks - len(b)) for b in used], device),
        mask=(keys[None, None, :] <= positions[:, :, None]).unsqueeze(1),
    )


def _causal_mask(q_len: int, ctx_len: int, device: torch.device) -> torch.Tensor:
    """[q_len, ctx_len] bool: the query at position p (the last q_len of ctx_len) sees keys 0-p."""
    q_pos = torch.arange(ctx_len - q_len, ctx_len, device=device)
    return torch.arange(ctx_len, device=device)[None, :] <= q_pos[:, None]


def _decode_plan(
    rows: list[int],
    context_lens: list[int],
    tables: list[list[int]],
    block_size: int,
    device: torch.device,
) -> DecodePlan:
    """Group the decode queries by the blocks their tables share from the first one on."""
    by_first_block: dict[int, list[int]] = {}
    for i, table in enumerate(tables):
        by_first_block.setdefault(table[0], []).append(i)
    order, prefixes, alone = [], [], []
    shared = [0] * len(tables)  # blocks of each query's shared prefix
    for members in by_first_block.values():
        first = tables[members[0]]
        # A shared block is full and never written again, so the last (written) block of each
        # member stays out of the prefix; the bound only makes that explicit.
        limit = min((context_lens[m] - 1) // block_size for m in members) if members[1:] else 0
        length = 0
        while length < limit and all(tables[m][length] == first[length] for m in members):
            length += 1
        if length == 0:
            alone += members
            continue
        for m in members:
            shared[m] = length
        blocks = first[:length]
        consecutive = blocks == list(range(blocks[0], blocks[0] + length))
        ids = slice(blocks[0], blocks[0] + length) if consecutive else _tensor(blocks, device)
        prefixes.append(SharedPrefix(len(order), len(order) + len(members), ids))
        order += members
    order += alone
    own = [tables[i][shared[i] : -(-context_lens[i] // block_size)] for i in order]
    width = max(len(blocks) for blocks in own)
    own_lens = [context_lens[i] - shared[i] * block_size for i in order]
    visible = torch.arange(width * block_size, device=device) < _tensor(own_lens, device)[:, None]
    return DecodePlan(
        rows=_tensor([rows[i] for i in order], device),
        own_blocks=_tensor([blocks + [0] * (width - len(blocks)) for blocks in own], device),
        own_visible=visible,
        prefixes=prefixes,
        alone=len(order) - len(alone),
    )


def write_kv(
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """Store the new tokens' k, v [T, Hkv, D] in caches [num_blocks, block_size, Hkv, D]."""
    k_cache.view(-1, *k_cache.shape[2:])[slot_mapping] = k
    v_cache.view(-1, *v_cache.shape[2:])[slot_mapping] = v


def paged_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    meta: AttentionMetadata,
    scale: float,
) -> torch.Tensor:
    """Causal attention of q [T, Hq, D] over each sequence's cached context; returns [T, Hq, D].

    A sequence's new tokens are the last query_len of its context_len, so the query at row j
    sits at absolute position context_len - query_len + j and sees keys 0 through that position.
    """
    out = torch.empty_like(q)
    if meta.decode is not None:
        rows = meta.decode.rows
        out[rows] = decode_attention(q[rows], k_cache, v_cache, meta.decode, scale).to(q.dtype)
    if meta.short is not None:
        out[meta.short.targets] = _short_attention(q, k_cache, v_cache, meta.short, scale)
    for span in meta.prefills:
        rows = slice(span.start, span.start + span.q_len)
        out[rows] = _prefill_attention(q[rows], k_cache, v_cache, span, scale)
    return out


def _short_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    chunks: ShortChunks,
    scale: float,
) -> torch.Tensor:
    """The short chunks' queries (q is the whole flat batch [T, Hq, D]) in one fused call;
    [len(targets), Hq, D]."""
    k = k_cache[chunks.blocks].flatten(1, 2).transpose(1, 2)  # [C, Hkv, B * block_size, D]
    v = v_cache[chunks.blocks].flatten(1, 2).transpose(1, 2)
    o = F.scaled_dot_product_attention(
        q[chunks.rows].transpose(1, 2), k, v, attn_mask=chunks.mask, scale=scale, enable_gqa=True
    )
    return o.transpose(1, 2)[chunks.valid]


def _gather(cache: torch.Tensor, blocks: slice | torch.Tensor) -> torch.Tensor:
    """Keys or values of blocks [..., n] as float32 [..., Hkv, n * block_size, D]."""
    return cache[blocks].flatten(-4, -3).transpose(-3, -2).float()


def decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    plan: DecodePlan,
    scale: float,
) -> torch.Tensor:
    """q [S, Hq, D], one query per sequence at its last position, in plan order; float32
    [S, Hq, D]. Scores and softmax are float32 whatever the cache dtype, as fused kernels keep
    them."""
    num_seqs, num_heads, head_dim = q.shape
    num_kv_heads = k_cache.shape[2]
    rep = num_heads // num_kv_heads  # query heads per key/value head (grouped-query attention)
    q = q.float().view(num_seqs, num_kv_heads, rep, head_dim) * scale
    k_own, v_own = _gather(k_cache, plan.own_blocks), _gather(v_cache, plan.own_blocks)
    scores = q @ k_own.transpose(-1, -2)  # [S, Hkv, rep, L]
    scores.masked_fill_(~plan.own_visible[:, None, None, :], float("-inf"))
    out = torch.empty_like(q)
    if plan.alone < num_seqs:
        alone = slice(plan.alone, num_seqs)
        out[alone] = torch.softmax(scores[alone], dim=-1) @ v_own[alone]
    for prefix in plan.prefixes:
        rows = slice(prefix.start, prefix.end)
        out[rows] = _with_prefix(q[rows], scores[rows], v_own[rows], k_cache, v_cache, prefix)
    return out.view(num_seqs, num_heads, head_dim)


def _with_prefix(
    q: torch.Tensor,
    own_scores: torch.Tensor,
    v_own: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    prefix: SharedPrefix,
) -> torch.Tensor:
    """One group's attention over its shared prefix and each query's own keys, as one softmax.

    q [G, Hkv, rep, D] (scaled), own_scores [G, Hkv, rep, L] (masked), v_own [G, Hkv, L, D].
    """
    group, num_kv_heads, rep, head_dim = q.shape
    k_pre = _gather(k_cache, prefix.blocks)  # [Hkv, P, D], read once for the whole group
    v_pre = _gather(v_cache, prefix.blocks)
    # Every query of the group against the prefix in one product per key/value head.
    q_flat = q.transpose(0, 1).reshape(num_kv_heads, group * rep, head_dim)
    pre_scores = (q_flat @ k_pre.transpose(-1, -2)).view(num_kv_heads, group, rep, -1)
    pre_scores = pre_scores.transpose(0, 1)  # [G, Hkv, rep, P]
    top = torch.maximum(pre_scores.amax(-1), own_scores.amax(-1)).unsqueeze(-1)
    pre_weights, own_weights = (pre_scores - top).exp(), (own_scores - top).exp()
    total = pre_weights.sum(-1, keepdim=True) + own_weights.sum(-1, keepdim=True)
    pre_flat = pre_weights.transpose(0, 1).reshape(num_kv_heads, group * rep, -1)
    from_prefix = (pre_flat @ v_pre).view(num_kv_heads, group, rep, head_dim).transpose(0, 1)
    return (from_prefix + own_weights @ v_own) / total


def _prefill_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    span: PrefillSpan,
    scale: float,
) -> torch.Tensor:
    """q [q_len, Hq, D], the last q_len positions of a context of ctx_len keys, causally."""
    ctx_len = span.ctx_len
    k = k_cache[span.blocks].flatten(0, 1)[:ctx_len].transpose(0, 1)
    v = v_cache[span.blocks].flatten(0, 1)[:ctx_len].transpose(0, 1)
    o = F.scaled_dot_product_attention(
        q.transpose(0, 1),
        k,
        v,
        attn_mask=span.mask,
        is_causal=span.mask is None,
        scale=scale,
        enable_gqa=True,
    )
    return o.transpose(0, 1)
