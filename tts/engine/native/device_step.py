"""The device's part of an engine step: block copies, the forward pass, sampling.

The async front runs it on the device thread while the event loop goes on serving, so it reads
the batch's sequences and changes none of them: the engine core records what it returns. The
runner gives one row of logits per chunk that samples, and one per position of a chunk that
scores its prompt (prompt log-probabilities: position p's logits score prompt token p + 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tts.engine.native.model_runner import ModelRunner, SeqChunk
from tts.engine.native.sampler import logprobs_of, sample
from tts.engine.native.scheduler import Batch, Chunk


@dataclass
class Sampled:
    """What a step's device work returns: per group of `batch.samples`, the sampled tokens and
    their logprobs; per chunk, the logprobs of the prompt tokens its positions predict (empty
    unless it asked)."""

    tokens: list[list[int]]
    logprobs: list[list[dict[int, float] | None]]
    prompt_logprobs: list[list[dict[int, float]]]


def execute(runner: ModelRunner, batch: Batch) -> Sampled:
    """Run `batch` (at least one chunk) through `runner` and sample its next tokens."""
    chunks = [
        SeqChunk(
            token_ids=c.seq.token_ids[c.start : c.start + c.num_tokens],
            start_pos=c.start,
            block_table=list(c.seq.block_table),
            needs_logits=c.needs_logits,
            all_logits=c.seq.needs_prompt_logits,
        )
        for c in batch.chunks
    ]
    for src, dst in batch.copies:
        runner.copy_block(src, dst)
    all_logits = runner.run(chunks)
    sample_rows, prompt_logprobs, row = [], [], 0
    for chunk, seq_chunk in zip(batch.chunks, chunks):
        count = len(seq_chunk.token_ids) if seq_chunk.all_logits else int(seq_chunk.needs_logits)
        prompt_logprobs.append(
            _prompt_logprobs(chunk, all_logits[row : row + count]) if seq_chunk.all_logits else []
        )
        if seq_chunk.needs_logits:
            sample_rows.append(row + count - 1)
        row += count
    rows = [r for r, group in zip(sample_rows, batch.samples) for _ in group]
    seqs = [seq for group in batch.samples for seq in group]
    if not seqs:
        return Sampled([], [], prompt_logprobs)
    logits = all_logits[torch.tensor(rows, device=all_logits.device)]
    tokens = sample(logits, [s.params for s in seqs], [s.generator for s in seqs])
    logprobs = logprobs_of(logits, tokens, [s.params.logprobs for s in seqs])
    flat = tokens.tolist()
    grouped, grouped_logprobs, start = [], [], 0
    for group in batch.samples:
        grouped.append(flat[start : start + len(group)])
        grouped_logprobs.append(logprobs[start : start + len(group)])
        start += len(group)
    return Sampled(grouped, grouped_logprobs, prompt_logprobs)


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
