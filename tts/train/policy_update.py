"""The GRPO update: `epochs` optimizer steps of the policy loss (`tts.train.policy_loss`) over
one step's rollouts, in micro-batches of `batch_size` sequences.

Each micro-batch's loss is weighted by its share of the step's normaliser (completions or
tokens, as the loss variant divides), so the summed gradients are those of the loss over the
whole step, whatever the micro-batch size. With `epochs` > 1 the ratio's denominator is the
policy that sampled, computed once before the first optimizer step (PPO's old policy).
"""

from __future__ import annotations

import time

import torch
from transformers import PreTrainedModel

from tts.train.grpo_config import GRPOConfig
from tts.train.policy_loss import micro_weight, policy_loss
from tts.train.rollout import Rollout


def token_logprobs(
    model: PreTrainedModel,
    batch: list[list[int]],
    starts: list[int],
    pad_id: int,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Log-probabilities of each sequence's completion tokens (at the rollout `temperature`, as
    the engine sampled them), their mask and the mean entropy, as [B, T] tensors."""
    device = next(model.parameters()).device
    width = max(len(seq) for seq in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    mask = torch.zeros((len(batch), width - 1))
    for row, (seq, start) in enumerate(zip(batch, starts)):
        ids[row, : len(seq)] = torch.tensor(seq)
        attention[row, : len(seq)] = 1
        mask[row, start - 1 : len(seq) - 1] = 1  # position t predicts token t + 1
    ids, attention, mask = ids.to(device), attention.to(device), mask.to(device)
    logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1].float()
    logits = logits / temperature
    logprobs = torch.log_softmax(logits, dim=-1)
    chosen = logprobs.gather(-1, ids[:, 1:, None]).squeeze(-1)
    with torch.no_grad():
        entropy = -(logprobs.exp() * logprobs).sum(-1)
        mean_entropy = float((entropy * mask).sum() / mask.sum().clamp(min=1))
    return chosen, mask, mean_entropy


def update(
    model: PreTrainedModel,
    reference: PreTrainedModel | None,
    optimizer: torch.optim.Optimizer,
    batch: Rollout,
    pad_id: int,
    config: GRPOConfig,
) -> dict[str, float]:
    """`epochs` optimizer steps of the policy loss over the rollouts (with the KL to a frozen
    `reference` when there is one); the last epoch's statistics."""
    model.train()
    order = sorted(range(len(batch.sequences)), key=lambda i: len(batch.sequences[i]))
    micros = [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]
    sequences = len(order)
    tokens = sum(len(batch.sequences[i]) - batch.starts[i] for i in order)
    temperature = config.temperature
    old: dict[int, torch.Tensor] = {}
    if config.epochs > 1:  # the ratio's denominator: the policy that sampled, before any step
        with torch.no_grad():
            for micro in micros:
                seqs = [batch.sequences[i] for i in micro]
                logprobs, _, _ = token_logprobs(
                    model, seqs, [batch.starts[i] for i in micro], pad_id, temperature
                )
                old[micro[0]] = logprobs
    started, totals = time.perf_counter(), {}
    for _ in range(config.epochs):
        sums = {"loss": 0.0, "clip_fraction": 0.0, "entropy": 0.0, "kl": 0.0}
        for micro in micros:
            seqs = [batch.sequences[i] for i in micro]
            starts = [batch.starts[i] for i in micro]
            logprobs, mask, entropy = token_logprobs(model, seqs, starts, pad_id, temperature)
            ref = None
            if reference is not None:
                with torch.no_grad():
                    ref, _, _ = token_logprobs(reference, seqs, starts, pad_id, temperature)
            advantages = torch.tensor([batch.advantages[i] for i in micro], device=mask.device)
            previous = old.get(micro[0], logprobs.detach())
            loss, stats = policy_loss(
                logprobs, previous, advantages, mask, config.loss, config.max_tokens, ref
            )
            weight = micro_weight(config.loss.rules, mask, sequences, tokens)
            (loss * weight).backward()
            sums["loss"] += loss.item() * weight
            sums["clip_fraction"] += stats["clip_fraction"] * weight
            sums["entropy"] += entropy * weight
            sums["kl"] += stats.get("kl", 0.0) * weight
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        totals = sums | {"grad_norm": float(norm)}
    seconds = time.perf_counter() - started
    if reference is None:
        totals.pop("kl")
    model.eval()
    return totals | {"train_tokens_per_s": config.epochs * tokens / max(seconds, 1e-9)}
