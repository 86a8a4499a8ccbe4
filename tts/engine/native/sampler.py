"""Sampling next tokens for a batch of rows, on the device, each row with its own parameters.

Filtering follows vLLM: temperature scales the logits, then top-k, top-p and min-p each remove
tokens from the tempered distribution. A row is drawn by inverting its cumulative distribution at
one uniform number (one random draw per row, where the exponential race that GPU samplers use
needs one per vocabulary entry: on CPU, drawing those cost more than the model's LM head). The
number of a seeded row comes from that row's own generator, so its samples do not depend on what
else is in the batch.
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
    """Token ids [rows] for float32 `logits` [rows, vocab]; one params and generator per row.

    The work that a batch does not ask for is skipped: no softmax when every row is greedy, no
    sort of the vocabulary unless a row sets top-k or top-p, one random number per row.
    """
    greedy = [p.temperature == 0 for p in params]
    if all(greedy):
        return logits.argmax(dim=-1)
    device = logits.device
    temperature = torch.tensor([p.temperature or 1.0 for p in params], device=device)
    probs = torch.softmax(logits / temperature.unsqueeze(1), dim=-1)
    if any(p.min_p > 0 for p in params):
        min_p = torch.tensor([p.min_p for p in params], device=device).unsqueeze(1)
        floor = min_p * probs.max(dim=-1, keepdim=True).values
        probs = probs.masked_fill(probs < floor, 0.0)
    if any(p.top_k > 0 or p.top_p < 1 for p in params):
        vocab = logits.shape[-1]
        probs = _top_k_top_p(
            probs,
            top_k=torch.tensor([p.top_k if p.top_k > 0 else vocab for p in params], device=device),
            top_p=torch.tensor([p.top_p for p in params], device=device),
        )
    sampled = _inverse_cdf(probs, _uniforms(generators, device))
    if not any(greedy):
        return sampled
    return torch.where(torch.tensor(greedy, device=device), logits.argmax(dim=-1), sampled)


def _uniforms(generators: list[torch.Generator | None], device: torch.device) -> torch.Tensor:
    """One uniform draw in [0, 1) per row: seeded rows from their own generator, the others
    from torch's default stream in one call."""
    u = torch.rand(len(generators), device=device)
    for row, generator in enumerate(generators):
        if generator is not None:
            u[row] = uniform(generator)
    return u


def uniform(generator: torch.Generator) -> torch.Tensor:
    """The next number of a seeded row's stream: each row it samples takes exactly one."""
    return torch.rand((), device=generator.device, generator=generator)


def _inverse_cdf(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The token whose cumulative-probability interval holds u * (row total), for each row:
    a draw from the (unnormalised) row distribution for u uniform in [0, 1)."""
    cdf = probs.cumsum(dim=-1)
    target = (u * cdf[:, -1]).unsqueeze(1)
    # right=True skips zero-probability tokens: the first token whose cdf exceeds the target.
    token = torch.searchsorted(cdf, target, right=True).squeeze(1)
    return token.clamp_(max=probs.shape[-1] - 1)


def _top_k_top_p(probs: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Zero the tokens outside each row's top-k and top-p nucleus.

    probs [rows, vocab], with min-p already applied (it removes only tokens less likely than
    every token it keeps, so the nucleus mass is that of the tempered distribution either way);
    top_k [rows] (vocab = off); top_p [rows] (1 = off). The most likely token always survives,
    so every row keeps something to sample.
    """
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    rank = torch.arange(probs.shape[-1], device=probs.device).unsqueeze(0)
    # Mass strictly before each token: a token is kept while that is below top_p.
    before = sorted_probs.cumsum(dim=-1) - sorted_probs
    drop = (rank >= top_k.unsqueeze(1)) | (before >= top_p.unsqueeze(1))
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
