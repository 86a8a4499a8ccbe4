"""Log-probabilities of completion tokens without holding the whole batch's logits.

A long reasoning batch's logits dwarf the model: 8 sequences of 8k tokens over Qwen's 151,936
ids are 40 GB in float32, and their log-softmax and gradient as much again. So the model body
runs once for the final hidden states, and the LM head is applied to chunks of positions and,
within each, to chunks of the vocabulary; each vocabulary chunk gives its own log-normaliser,
the target's log-probability within the chunk and the chunk's entropy, which combine exactly
into the full softmax's (the same decomposition as Liger Kernel's fused linear cross-entropy
and Cut Cross-Entropy, Wijmans et al. 2025). Each chunk runs under activation checkpointing,
so the backward pass recomputes its logits instead of keeping them: peak memory grows with
one chunk, not with the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel

# Families whose logits are exactly the output embedding applied to the body's last hidden
# state (final norm inside the body, no soft-capping or logit scale after it, as Gemma's and
# Cohere's forwards add): their head can be split by vocabulary rows.
LINEAR_HEAD_FAMILIES = frozenset({"llama", "mistral", "qwen2", "qwen3"})
# One chunk's logits at most (positions x vocabulary entries): 256 MiB in float32.
CHUNK_ELEMENTS = 2**26


def padded(
    batch: list[list[int]], starts: list[int], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded token ids [B, W], their attention mask, and the [B, W - 1] mask of
    completion tokens in the columns every per-token tensor of training uses: column t holds
    what position t predicts, the token at t + 1."""
    width = max(len(seq) for seq in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    mask = torch.zeros((len(batch), width - 1))
    for row, (seq, start) in enumerate(zip(batch, starts)):
        ids[row, : len(seq)] = torch.tensor(seq)
        attention[row, : len(seq)] = 1
        mask[row, start - 1 : len(seq) - 1] = 1
    return ids.to(device), attention.to(device), mask.to(device)


def token_logprobs(
    model: PreTrainedModel,
    batch: list[list[int]],
    starts: list[int],
    pad_id: int,
    temperature: float,
    *,
    token_chunk: int | None = None,
    vocab_chunk: int = 32768,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Log-probabilities of each sequence's completion tokens (at the rollout `temperature`, as
    the engine sampled them), their mask and the mean entropy, as [B, T] tensors.

    token_chunk: positions (over the whole batch) whose logits are computed together; None
    takes as many as keep one chunk within CHUNK_ELEMENTS. vocab_chunk: vocabulary entries
    per chunk. When one chunk covers everything the numbers are those of a plain log-softmax
    over the full logits, bit for bit. Other families than LINEAR_HEAD_FAMILIES get their
    full logits from the model's own forward and are chunked only for the log-softmax.
    """
    ids, attention, mask = padded(batch, starts, pad_id, next(model.parameters()).device)
    states, weight, bias = _final_states(model, ids, attention)
    # Every position is scored, the last one too (its target is a stand-in, masked out), so
    # one chunk multiplies the same [B * width, hidden] matrix as the model's own forward.
    targets = torch.cat([ids[:, 1:], ids[:, -1:]], dim=1).flatten()
    vocab = states.shape[-1] if weight is None else weight.shape[0]
    columns = min(vocab_chunk, vocab)
    step = token_chunk or max(1, CHUNK_ELEMENTS // columns)
    # Split once, so each weight slice gathers its gradient over all position chunks.
    weights = weight.split(columns) if weight is not None else None
    biases = bias.split(columns) if bias is not None else None
    chosen, entropy = [], []
    for part, part_targets in zip(states.flatten(0, 1).split(step), targets.split(step)):
        if weights is None:
            pieces = [(cols, None, None) for cols in part.split(columns, dim=1)]
        else:
            pieces = [
                (part, w, None if biases is None else biases[i]) for i, w in enumerate(weights)
            ]
        logprob, spread = _positions(pieces, part_targets, columns, temperature)
        chosen.append(logprob)
        entropy.append(spread)
    with torch.no_grad():
        per_token = torch.cat(entropy).view(ids.shape)[:, :-1]
        mean_entropy = float((per_token * mask).sum() / mask.sum().clamp(min=1))
    return torch.cat(chosen).view(ids.shape)[:, :-1], mask, mean_entropy


def _final_states(
    model: PreTrainedModel, ids: torch.Tensor, attention: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """What the logits are a linear map of, and that map's weight and bias: the body's last
    hidden states and the output embedding (tied or not), or for other families the model's
    own logits and no map."""
    head = model.get_output_embeddings()
    if model.config.model_type not in LINEAR_HEAD_FAMILIES or head is None:
        return model(input_ids=ids, attention_mask=attention).logits, None, None
    body = model.get_decoder()
    states = body(input_ids=ids, attention_mask=attention, use_cache=False).last_hidden_state
    return states, head.weight, head.bias


def _positions(
    pieces: Sequence[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]],
    targets: torch.Tensor,
    columns: int,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The targets' log-probabilities and the entropies at one chunk of positions, from the
    vocabulary chunks' statistics: log p = log p_within_chunk + (lse_chunk - lse), and
    H = sum_c w_c (H_c - log w_c) with w_c = exp(lse_c - lse), each chunk's probability mass."""
    stats = []
    for index, (states, weight, bias) in enumerate(pieces):
        args = (states, weight, bias, targets, index * columns, temperature)
        if torch.is_grad_enabled():  # recompute the chunk's logits in the backward pass
            stats.append(checkpoint(_vocab_chunk, *args, use_reentrant=False))
        else:
            stats.append(_vocab_chunk(*args))
    normalisers, within, entropies = (torch.stack(values) for values in zip(*stats))
    # log w_c; exactly 0 for a single chunk, whose numbers are then log_softmax's own.
    shares = normalisers - torch.logsumexp(normalisers, dim=0)
    owner = (targets // columns)[None]
    chosen = within.sum(dim=0) + shares.gather(0, owner).squeeze(0)
    with torch.no_grad():
        entropy = (shares.exp() * (entropies - shares)).sum(dim=0)
    return chosen, entropy


def _vocab_chunk(
    states: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    offset: int,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One vocabulary chunk at some positions: its log-normaliser, the target's log-probability
    within the chunk (0 where the target is another chunk's) and its entropy, each [N]."""
    logits = states if weight is None else F.linear(states, weight, bias)
    logits = logits.float() / temperature
    logprobs = torch.log_softmax(logits, dim=-1)
    local = targets - offset
    inside = (local >= 0) & (local < logits.shape[-1])
    at = local.clamp(0, logits.shape[-1] - 1)[:, None]
    logprob = logprobs.gather(-1, at).squeeze(-1)
    # Any logit minus its log-probability is the log-normaliser; taking the target's costs no
    # second pass over the chunk (logsumexp would, forward and backward).
    normaliser = logits.gather(-1, at).squeeze(-1) - logprob
    with torch.no_grad():
        entropy = -(logprobs.exp() * logprobs).sum(-1)
    return normaliser, torch.where(inside, logprob, 0.0), entropy
