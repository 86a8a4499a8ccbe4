"""Sampling next tokens for a batch of rows, on the device, each row with its own parameters.

Filtering follows vLLM: temperature scales the logits, then top-k, top-p and min-p each remove
tokens from the tempered distribution. A row is drawn by the exponential race (argmax of
p_i / E_i with E_i ~ Exp(1), which picks token i with probability p_i): the noise of a seeded row
comes from that row's own generator, so its samples do not depend on what else is in the batch.
Temperature 0 means greedy. Log-probabilities are those of the model's unmodified distribution.
"""

from __future__ import annotations

import torch

from tts.engine.backend import SamplingParams


def sample(
    logits: torch.Tensor,
    params: list[SamplingParams],
    generators: list[torch.Generator | None],
) -> torch.Tensor:
    """Token ids [rows] for float32 `logits` [rows, vocab]; one params and generator per row."""
    device = logits.device
    temperature = torch.tensor([p.temperature for p in params], device=device)
    greedy = temperature == 0
    if bool(greedy.all()):
        return logits.argmax(dim=-1)
    vocab = logits.shape[-1]
    probs = torch.softmax(logits / temperature.clamp(min=1e-5).unsqueeze(1), dim=-1)
    probs = _filter(
        probs,
        top_k=torch.tensor([p.top_k if p.top_k > 0 else vocab for p in params], device=device),
        top_p=torch.tensor([p.top_p for p in params], device=device),
        min_p=torch.tensor([p.min_p for p in params], device=device),
    )
    noise = torch.empty_like(probs)
    for row, generator in enumerate(generators):
        noise[row].exponential_(generator=generator)
    sampled = (probs / noise).argmax(dim=-1)
    return torch.where(greedy, logits.argmax(dim=-1), sampled)


def _filter(
    probs: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor, min_p: torch.Tensor
) -> torch.Tensor:
    """Zero the tokens outside each row's top-k, top-p nucleus and min-p floor.

    probs [rows, vocab]; top_k [rows] (vocab = off); top_p, min_p [rows] (1 and 0 = off).
    The most likely token always survives, so every row keeps something to sample.
    """
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    rank = torch.arange(probs.shape[-1], device=probs.device).unsqueeze(0)
    # Mass strictly before each token: a token is kept while that is below top_p.
    before = sorted_probs.cumsum(dim=-1) - sorted_probs
    drop = (rank >= top_k.unsqueeze(1)) | (before >= top_p.unsqueeze(1))
    drop |= sorted_probs < min_p.unsqueeze(1) * sorted_probs[:, :1]
    drop[:, 0] = False
    sorted_probs = sorted_probs.masked_fill(drop, 0.0)
    return torch.zeros_like(probs).scatter_(-1, order, sorted_probs)


def logprobs_of(
    logits: torch.Tensor, tokens: torch.Tensor, top: list[int | None]
) -> list[dict[int, float] | None]:
    """Per row, {token: logprob} for the sampled token and the row's `top` best (None: skip)."""
    wanted = [k for k in top if k is not None]
    if not wanted:
        return [None] * len(top)
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    chosen = logprobs.gather(1, tokens.unsqueeze(1)).squeeze(1).tolist()
    best_values, best_ids = logprobs.topk(max(max(wanted), 1), dim=-1)
    best_values, best_ids = best_values.tolist(), best_ids.tolist()
    result: list[dict[int, float] | None] = []
    for row, k in enumerate(top):
        if k is None:
            result.append(None)
            continue
        entry = {int(tokens[row]): chosen[row]}
        entry.update(zip(best_ids[row][:k], best_values[row][:k]))
        result.append(entry)
    return result
