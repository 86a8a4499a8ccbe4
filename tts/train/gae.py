"""Token-level advantages from a critic: generalised advantage estimation and the value loss, as
pure tensor functions over the [B, T] layout of `tts.train.logprobs.token_logprobs` (column t
holds the token at position t + 1; `mask` marks each completion's tokens, one contiguous run per
row).

GAE (Schulman et al., 2016, "High-Dimensional Continuous Control Using Generalized Advantage
Estimation", eq. 16): with delta_t = r_t + gamma V(s_{t+1}) - V(s_t) and V = 0 after the last
token, A_t = sum_l (gamma lambda)^l delta_{t+l}; the critic's target is the return
A_t + V(s_t). lambda = 1 is the Monte Carlo return less the value (the critic only as a
baseline); lower lambda leans on the critic's own estimates. For a language model the state
s_t is the prompt and the completion before token t, so r_t is whatever reward lands on token
t: the outcome on the last token, a process reward on the last token of each step
(`tts.train.process_rewards`).

The advantages are whitened over the batch's tokens before the policy loss (as PPO for
language models does: Ziegler et al., 2019; TRL, OpenRLHF and verl alike), and the critic is
fitted with PPO's clipped value loss (Schulman et al., 2017, "Proximal Policy Optimization
Algorithms"; the clipping as OpenAI's baselines ppo2 and every RLHF PPO since).
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from tts.train.distributed import ONE_PROCESS, Ranks


class CriticConfig(BaseModel):
    """The value model of `advantage: gae` and its GAE."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(
        None, description="causal LM folder the value model starts from; default the policy's"
    )
    lr: float = Field(1e-4, gt=0, description="the value model's peak learning rate")
    value_clip: float = Field(
        0.2, gt=0, description="a value moves at most this far from the old one in the loss"
    )
    gamma: float = Field(1.0, gt=0, le=1, description="discount per token")
    lam: float = Field(1.0, ge=0, le=1, description="GAE's lambda (1: the return less the value)")


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, T] per-token rewards and values of the completion tokens `mask` marks -> (advantages,
    returns), both 0 off the mask."""
    mask = mask.to(values.dtype)
    rewards, values = rewards * mask, values * mask
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])
    next_value = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        # Off the mask (padding after a completion, the prompt before it) the recursion restarts:
        # the state after a completion's last token is terminal, its value 0.
        running = running * mask[:, t]
        advantages[:, t] = running
        next_value = values[:, t]
    return advantages, (advantages + values) * mask


def whiten(values: torch.Tensor, ranks: Ranks = ONE_PROCESS, eps: float = 1e-8) -> torch.Tensor:
    """A 1-D tensor of every token's value shifted and scaled to mean 0 and standard deviation
    1, the statistics taken over every rank's tokens."""
    values = values.double()
    count, total = ranks.sum([float(values.numel()), float(values.sum())])
    mean = total / max(count, 1.0)
    [square] = ranks.sum([float(((values - mean) ** 2).sum())])
    return ((values - mean) / (square / max(count, 1.0) + eps) ** 0.5).float()


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip: float,
) -> tuple[torch.Tensor, float]:
    """PPO's clipped value loss, 0.5 max((V - R)^2, (clip(V, V_old - clip, V_old + clip) - R)^2)
    averaged over the masked tokens, and the share of tokens where the clipped term was the
    larger."""
    mask = mask.to(values.dtype)
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    unclipped_error = (values - returns) ** 2
    clipped_error = (clipped - returns) ** 2
    count = mask.sum().clamp(min=1)
    loss = 0.5 * (torch.maximum(unclipped_error, clipped_error) * mask).sum() / count
    with torch.no_grad():
        clip_fraction = float(((clipped_error > unclipped_error) * mask).sum() / count)
    return loss, clip_fraction


def explained_variance(
    values: torch.Tensor, returns: torch.Tensor, ranks: Ranks = ONE_PROCESS
) -> float:
    """1 - Var(R - V) / Var(R) over every rank's tokens (1-D tensors): how much of the returns'
    spread the critic predicts (1 perfect, 0 no better than their mean, below 0 worse)."""
    values, returns = values.double(), returns.double()
    count, total, error, square_error = ranks.sum(
        [
            float(returns.numel()),
            float(returns.sum()),
            float((returns - values).sum()),
            float(((returns - values) ** 2).sum()),
        ]
    )
    count = max(count, 1.0)
    mean = total / count
    [spread] = ranks.sum([float(((returns - mean) ** 2).sum())])
    residual = square_error - error**2 / count
    return 1 - residual / spread if spread > 0 else 0.0
