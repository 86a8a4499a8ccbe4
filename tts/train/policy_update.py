"""The GRPO update: `epochs` optimizer steps of the policy loss (`tts.train.policy_loss`) over
one step's rollouts, in micro-batches of `batch_size` sequences or of at most
`micro_batch_tokens` padded tokens (`micro_batches`).

Each micro-batch's loss is weighted by its share of the step's normaliser (completions or
tokens, as the loss variant divides), so the summed gradients are those of the loss over the
whole step, whatever the micro-batch size. Under torchrun the normaliser is summed over every
rank's rollouts first, and each rank's loss is scaled by the rank count because FSDP2 averages
gradients over ranks: the update is that of one process on the whole batch, whatever the rank
count. With `epochs` > 1 the ratio's denominator is the policy that sampled, computed once
before the first optimizer step (PPO's old policy). An asynchronous batch carries the
log-probabilities its sampling engine reported (`Rollout.behaviour`): the policy before the
first step is then the proximal policy of the decoupled objective, computed the same way.
"""

from __future__ import annotations

import time

import torch
from transformers import PreTrainedModel

from tts.train.distributed import ONE_PROCESS, Ranks, as_float
from tts.train.grpo_config import GRPOConfig
from tts.train.logprobs import token_logprobs
from tts.train.policy_loss import micro_weight, policy_loss
from tts.train.rollout import Rollout


def micro_batches(lengths: list[int], config: GRPOConfig) -> list[list[int]]:
    """The sequences' indices, shortest first, cut into micro-batches: `batch_size` each, or
    with `micro_batch_tokens` as many as fit in that many padded tokens (a micro-batch's count
    times its longest length; a sequence longer than that goes alone)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    if config.micro_batch_tokens is None:
        return [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]
    micros: list[list[int]] = []
    for i in order:  # shortest first: the sequence added is the micro-batch's longest
        if micros and (len(micros[-1]) + 1) * lengths[i] <= config.micro_batch_tokens:
            micros[-1].append(i)
        else:
            micros.append([i])
    return micros


def rank_micro_batches(batch: Rollout, config: GRPOConfig, ranks: Ranks) -> list[list[int]]:
    """This rank's micro-batches of `batch`, padded with empty ones to the count of the rank
    that has the most: under torchrun every rank takes part in each forward's collectives."""
    micros = micro_batches([len(seq) for seq in batch.sequences], config)
    return micros + [[] for _ in range(int(ranks.max(len(micros))) - len(micros))]


def idle_pass(model: PreTrainedModel, pad_id: int, temperature: float) -> None:
    """A forward and backward on one padding token that adds nothing to the gradients: a rank
    with fewer micro-batches than another still joins each of FSDP2's collectives."""
    logprobs, _, _ = token_logprobs(model, [[pad_id, pad_id]], [1], pad_id, temperature)
    if torch.is_grad_enabled():
        (logprobs.sum() * 0.0).backward()


def aligned(values: list[list[float]], starts: list[int], like: torch.Tensor) -> torch.Tensor:
    """Per-completion-token values laid out as `token_logprobs` lays out its [B, T] tensors
    (column t holds the token at position t + 1)."""
    out = torch.zeros_like(like)
    for row, (row_values, start) in enumerate(zip(values, starts)):
        out[row, start - 1 : start - 1 + len(row_values)] = torch.tensor(row_values)
    return out


def update(
    model: PreTrainedModel,
    reference: PreTrainedModel | None,
    optimizer: torch.optim.Optimizer,
    batch: Rollout,
    pad_id: int,
    config: GRPOConfig,
    ranks: Ranks = ONE_PROCESS,
) -> dict[str, float]:
    """`epochs` optimizer steps of the policy loss over the rollouts (this rank's share of
    them under torchrun; with the KL to a frozen `reference` when there is one); the last
    epoch's statistics, over every rank."""
    model.train()
    micros = rank_micro_batches(batch, config, ranks)
    sequences, tokens = ranks.sum(
        [len(batch.sequences), sum(len(seq) - s for seq, s in zip(batch.sequences, batch.starts))]
    )
    temperature = config.temperature
    old: dict[int, torch.Tensor] = {}
    decoupled = config.max_staleness > 0  # the batch carries the sampler's log-probabilities
    # The ratio's denominator: the policy before any step (the sampler's, or the proximal one).
    if config.epochs > 1 or decoupled:
        with torch.no_grad():
            for micro in micros:
                if not micro:
                    idle_pass(model, pad_id, temperature)
                    continue
                seqs = [batch.sequences[i] for i in micro]
                logprobs, _, _ = token_logprobs(
                    model, seqs, [batch.starts[i] for i in micro], pad_id, temperature
                )
                old[micro[0]] = logprobs
    started, totals = time.perf_counter(), {}
    for _ in range(config.epochs):
        sums = dict.fromkeys(
            ["loss", "clip_fraction", "entropy", "kl", "behaviour_weight", "behaviour_capped"], 0.0
        )
        for micro in micros:
            if not micro:
                idle_pass(model, pad_id, temperature)
                continue
            seqs = [batch.sequences[i] for i in micro]
            starts = [batch.starts[i] for i in micro]
            logprobs, mask, entropy = token_logprobs(model, seqs, starts, pad_id, temperature)
            ref = None
            if reference is not None:
                with torch.no_grad():
                    ref, _, _ = token_logprobs(reference, seqs, starts, pad_id, temperature)
            if batch.token_advantages:  # a critic's or PRIME's, one per token
                advantages = aligned([batch.token_advantages[i] for i in micro], starts, logprobs)
            else:
                advantages = torch.tensor([batch.advantages[i] for i in micro], device=mask.device)
            previous = old.get(micro[0], logprobs.detach())
            behaviour = None
            if decoupled:
                behaviour = aligned([batch.behaviour[i] for i in micro], starts, logprobs)
            loss, stats = policy_loss(
                logprobs, previous, advantages, mask, config.loss, config.max_tokens, ref, behaviour
            )
            weight = micro_weight(config.loss.rules, mask, sequences, tokens)
            (loss * (weight * ranks.world)).backward()
            sums["loss"] += loss.item() * weight
            sums["clip_fraction"] += stats["clip_fraction"] * weight
            sums["entropy"] += entropy * weight
            for name in ("kl", "behaviour_weight", "behaviour_capped"):
                sums[name] += stats.get(name, 0.0) * weight
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        totals = dict(zip(sums, ranks.sum(list(sums.values())))) | {"grad_norm": as_float(norm)}
    seconds = ranks.max(time.perf_counter() - started)
    if reference is None:
        totals.pop("kl")
    if not decoupled:
        totals.pop("behaviour_weight")
        totals.pop("behaviour_capped")
    model.eval()
    return totals | {"train_tokens_per_s": config.epochs * tokens / max(seconds, 1e-9)}
