"""The device's part of an engine step: block copies, the forward pass, sampling.

The async front runs it on the device thread while the event loop goes on serving, so it reads
the batch's sequences and changes none of them (but for their seeded random streams): the engine
core records what it returns. The runner gives one row of logits per chunk that samples, and one
per position of a chunk that scores its prompt (prompt log-probabilities: position p's logits
score prompt token p + 1) or verifies a draft (`speculative.py`: every position samples).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tts.engine.native.model_runner import ModelRunner, SeqChunk
from tts.engine.native.sampler import logprobs_of, sample
from tts.engine.native.scheduler import Batch, Chunk
from tts.engine.native.speculative import kept_tokens, replay


@dataclass
class Sampled:
    """What a step's device work returns: per group of `batch.samples` and per sequence in it,
    its new tokens (one, or after a draft as many as `kept_tokens` keeps) and their logprobs
    (one entry per token; none unless it asked); per chunk, the logprobs of the prompt tokens
    its positions predict (empty unless it asked)."""

    tokens: list[list[list[int]]]
    logprobs: list[list[list[dict[int, float]]]]
    prompt_logprobs: list[list[dict[int, float]]]


def execute(runner: ModelRunner, batch: Batch) -> Sampled:
    """Run `batch` (at least one chunk) through `runner` and sample its next tokens."""
    chunks = [
        SeqChunk(
            token_ids=c.seq.token_ids[c.start : c.start + c.num_tokens] + c.draft,
            start_pos=c.start,
            block_table=list(c.seq.block_table),
            needs_logits=c.needs_logits,
            all_logits=c.seq.needs_prompt_logits or bool(c.draft),
        )
        for c in batch.chunks
    ]
    for src, dst in batch.copies:
        runner.copy_block(src, dst)
    all_logits = runner.run(chunks)
    first_rows, prompt_logprobs, row = [], [], 0
    for chunk, seq_chunk in zip(batch.chunks, chunks):
        count = len(seq_chunk.token_ids) if seq_chunk.all_logits else int(seq_chunk.needs_logits)
        prompt_logprobs.append(
            _prompt_logprobs(chunk, all_logits[row : row + count])
            if chunk.seq.needs_prompt_logits
            else []
        )
        if seq_chunk.needs_logits:
            # The last position samples, and so does every position of a draft.
            first_rows.append(row + count - 1 - len(chunk.draft))
        row += count
    sampling = [c for c in batch.chunks if c.needs_logits]
    # (sequence, its draft, its first row): each sequence samples 1 + len(draft) rows.
    samplers = [
        (seq, chunk.draft, first)
        for chunk, group, first in zip(sampling, batch.samples, first_rows)
        for seq in group
    ]
    if not samplers:
        return Sampled([], [], prompt_logprobs)
    rows = [first + j for _, draft, first in samplers for j in range(len(draft) + 1)]
    owners = [seq for seq, draft, _ in samplers for _ in range(len(draft) + 1)]
    # A seeded stream that verifies a draft is rewound to the positions it keeps (see `replay`).
    states = {
        seq: seq.generator.get_state()
        for seq, draft, _ in samplers
        if draft and seq.generator is not None
    }
    logits = all_logits[torch.tensor(rows, device=all_logits.device)]
    tokens = sample(logits, [s.params for s in owners], [s.generator for s in owners])
    logprobs = logprobs_of(logits, tokens, [s.params.logprobs for s in owners])
    flat, start = tokens.tolist(), 0
    new_tokens, new_logprobs = [], []
    for seq, draft, _ in samplers:
        kept = kept_tokens(draft, flat[start : start + len(draft) + 1])
        new_tokens.append(kept)
        new_logprobs.append([e for e in logprobs[start : start + len(kept)] if e is not None])
        if seq in states:
            replay(seq.generator, states[seq], len(kept))
        start += len(draft) + 1
    return Sampled(_grouped(new_tokens, batch), _grouped(new_logprobs, batch), prompt_logprobs)


def _grouped(per_seq: list, batch: Batch) -> list[list]:
    """`per_seq` (one item per sequence of `batch.samples`, in order) split by group."""
    groups, start = [], 0
    for group in batch.samples:
        groups.append(per_seq[start : start + len(group)])
        start += len(group)
    return groups


def _prompt_logprobs(chunk: Chunk, logits: torch.Tensor) -> list[dict[int, float]]:
    """The logprobs of the prompt tokens that `chunk`'s positions predict: position p's logits
    [rows of `logits`] score token p + 1, while that is still a prompt token."""
    seq = chunk.seq
    targets = seq.token_ids[
        chunk.start + 1 : min(chunk.start + chunk.num_tokens + 1, seq.num_prompt_tokens)
    ]
    if not targets:
        return []
    tokens = torch.tensor(targets, device=logits.device)
    return logprobs_of(logits[: len(targets)], tokens, [seq.params.prompt_logprobs] * len(targets))
