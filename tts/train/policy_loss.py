"""The policy-gradient losses of GRPO and its successors, as pure tensor functions.

One batch is `groups` prompts x `G` completions each; per-token tensors are
[groups * G, T] with a mask of the completion tokens. What each variant changes is one row of
`VARIANTS`, so the loop and every other module read a variant's rules and never its name:

- `grpo`, DeepSeekMath (Shao et al., 2024, "DeepSeekMath", eq. 3): advantage
  A_i = (r_i - mean(r)) / std(r) over the group; the clipped surrogate
  min(rho * A, clip(rho, 1 - eps, 1 + eps) * A) averaged over each completion's tokens, then
  over completions (sequence-level normalisation: 1/G sum_i 1/|o_i| sum_t).
- `dr_grpo`, Dr. GRPO (Liu et al., 2025, "Understanding R1-Zero-Like Training: A Critical
  Perspective", Sec. 3.1): A_i = r_i - mean(r), no division by the std (it favours groups that
  are nearly all right or all wrong), and the token sum divided by a constant,
  completions x `max_tokens`, not by each completion's length (which rewards long wrong
  answers less harshly than short ones).
- `dapo`, DAPO (Yu et al., 2025, "DAPO: An Open-Source LLM Reinforcement Learning System at
  Scale", eq. 8): GRPO's advantage, clip-higher (eps_low 0.2, eps_high 0.28: room for
  low-probability tokens to rise), and the token-level loss: the sum over every token of the
  batch divided by the number of tokens, so a long completion weighs by its length. Its
  dynamic sampling (eq. 11, drop groups whose rewards are all equal: their advantages are 0 and
  they only dilute the batch) is `informative_groups`, applied by the loop before the update.

Asynchronous runs (`max_staleness` > 0) sample with older weights than those trained, and
take the decoupled PPO objective (Hilton et al., 2022, "Batch size-invariance for policy
optimization"; as AReaL uses it, Fu et al., 2025, "AReaL: A Large-Scale Asynchronous
Reinforcement Learning System for Language Reasoning", Sec. 5.2): the ratio that is clipped is
pi_theta / pi_prox, where the proximal policy pi_prox is the trainer's weights before the
step's first update, and each token's term is weighted by pi_prox / pi_behaviour, the policy
that sampled it (the engine's log-probability, recorded with its version), which corrects for
the staleness; tokens whose weight exceeds `behaviour_cap` contribute nothing.

Optional KL to a reference policy, DeepSeekMath's unbiased estimator (eq. 4),
KL = pi_ref / pi - log(pi_ref / pi) - 1 per token, added with weight `kl_coef` (0 by default,
as DAPO and Dr. GRPO argue: with verifiable rewards the policy should move away).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

# [B, T] per-token losses, [B, T] completion mask, the token budget -> the loss.
TokenReduction = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


def mean_per_completion(
    per_token: torch.Tensor, mask: torch.Tensor, max_tokens: int
) -> torch.Tensor:
    """Each completion's mean over its tokens, then the mean over completions (DeepSeekMath)."""
    lengths = mask.sum(dim=1).clamp(min=1)
    return ((per_token * mask).sum(dim=1) / lengths).mean()


def sum_over_budget(per_token: torch.Tensor, mask: torch.Tensor, max_tokens: int) -> torch.Tensor:
    """The token sum over completions x `max_tokens`, a constant (Dr. GRPO)."""
    return (per_token * mask).sum() / (mask.shape[0] * max_tokens)


def mean_per_token(per_token: torch.Tensor, mask: torch.Tensor, max_tokens: int) -> torch.Tensor:
    """The token sum over the number of tokens of the batch (DAPO's token-level loss)."""
    return (per_token * mask).sum() / mask.sum().clamp(min=1)


@dataclass(frozen=True)
class LossVariant:
    """What one variant of the GRPO step means."""

    scale_advantages: bool  # divide r - mean(r) by the group's std
    reduce: TokenReduction  # how the [B, T] per-token losses become one number
    # What `reduce` divides by: a micro-batch's share of the step's loss is its share of these.
    normaliser: Literal["completions", "tokens"]
    clip_high: float | None  # default upper clip eps; None: clip_low (symmetric)
    dynamic_sampling: bool  # default: drop groups of equal rewards and draw more


VARIANTS: dict[str, LossVariant] = {
    # Shao et al., 2024, "DeepSeekMath", Sec. 4.1, eq. 3.
    "grpo": LossVariant(
        scale_advantages=True,
        reduce=mean_per_completion,
        normaliser="completions",
        clip_high=None,
        dynamic_sampling=False,
    ),
    # Liu et al., 2025, "Understanding R1-Zero-Like Training: A Critical Perspective", Sec. 3.1.
    "dr_grpo": LossVariant(
        scale_advantages=False,
        reduce=sum_over_budget,
        normaliser="completions",
        clip_high=None,
        dynamic_sampling=False,
    ),
    # Yu et al., 2025, "DAPO: An Open-Source LLM Reinforcement Learning System at Scale",
    # eq. 8 (token-level loss, clip-higher) and eq. 11 (dynamic sampling).
    "dapo": LossVariant(
        scale_advantages=True,
        reduce=mean_per_token,
        normaliser="tokens",
        clip_high=0.28,
        dynamic_sampling=True,
    ),
}

Variant = Literal["grpo", "dr_grpo", "dapo"]  # the names of VARIANTS


class LossConfig(BaseModel):
    """The loss of one GRPO run."""

    model_config = ConfigDict(extra="forbid")

    variant: Variant = Field("grpo", description="grpo, dr_grpo or dapo")
    clip_low: float = Field(0.2, gt=0, lt=1, description="eps: the ratio is clipped below 1-eps")
    clip_high: float | None = Field(
        None, gt=0, description="the ratio is clipped above 1+this; default clip_low (dapo 0.28)"
    )
    kl_coef: float = Field(0.0, ge=0, description="weight of the KL to the reference model")
    behaviour_cap: float = Field(
        5.0,
        gt=1,
        description="asynchronous runs: tokens whose weight pi_prox / pi_behaviour is above "
        "this are left out of the loss",
    )

    @model_validator(mode="after")
    def _variant_defaults(self) -> LossConfig:
        if self.clip_high is None:
            default = self.rules.clip_high
            self.clip_high = self.clip_low if default is None else default
        return self

    @property
    def rules(self) -> LossVariant:
        """What this config's variant means."""
        return VARIANTS[self.variant]


def micro_weight(rules: LossVariant, mask: torch.Tensor, completions: int, tokens: int) -> float:
    """The share of the whole step's normaliser in one micro-batch (its [B, T] `mask`), so that
    summing weighted micro-batch losses gives the loss over the whole step of `completions`
    completions holding `tokens` completion tokens."""
    if rules.normaliser == "tokens":
        return float(mask.sum()) / tokens
    return mask.shape[0] / completions


# Rewards closer than this, relative to their size, are equal: shaped rewards summed from
# parts can differ from an equal one in their last bits, far below any difference a reward means.
EQUAL_REWARDS = 1e-9


def equal_groups(rewards: torch.Tensor) -> torch.Tensor:
    """[groups, G] rewards -> [groups] bool: the groups whose rewards are all equal, up to
    rounding (`EQUAL_REWARDS`)."""
    rewards = rewards.double()
    spread = rewards.max(dim=1).values - rewards.min(dim=1).values
    return spread <= EQUAL_REWARDS * rewards.abs().max(dim=1).values.clamp(min=1)


def group_advantages(rewards: torch.Tensor, scale: bool, eps: float = 1e-6) -> torch.Tensor:
    """[groups, G] rewards -> float64 advantages: minus the group mean, divided by the group's
    std (unbiased, as DeepSeekMath's code takes it) when `scale`. A group of equal rewards gets
    exactly 0.

    In float64: in float32 the mean of equal rewards such as 0.7 can land a rounding step off
    them, and dividing by std + eps makes that step advantages of up to +-0.06."""
    rewards = rewards.double()
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    if scale:
        centred = centred / (rewards.std(dim=1, keepdim=True) + eps)
    return centred.masked_fill(equal_groups(rewards)[:, None], 0.0)


def informative_groups(rewards: torch.Tensor) -> torch.Tensor:
    """[groups, G] rewards -> [groups] bool: the groups whose rewards are not all equal (DAPO's
    dynamic sampling keeps only these)."""
    return ~equal_groups(rewards)


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    config: LossConfig,
    max_tokens: int,
    ref_logprobs: torch.Tensor | None = None,
    behaviour_logprobs: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss to minimise and its statistics.

    logprobs: [B, T] log-probabilities of the sampled tokens under the policy being trained;
    old_logprobs: the same under the policy that sampled them (no gradient), or under the
        proximal policy when `behaviour_logprobs` are given;
    advantages: [B], one per completion, spread over its tokens, or [B, T], one per token (a
        critic's GAE, PRIME's);
    mask: [B, T], 1 on completion tokens;
    max_tokens: the generation budget, Dr. GRPO's constant normaliser;
    behaviour_logprobs: [B, T], asynchronous runs: the log-probabilities the sampling engine
        reported, for the decoupled objective's weight pi_prox / pi_behaviour.
    """
    mask = mask.to(logprobs.dtype)
    ratio = torch.exp(logprobs - old_logprobs)
    advantage = advantages[:, None] if advantages.dim() == 1 else advantages
    clipped = ratio.clamp(1 - config.clip_low, 1 + config.clip_high)
    per_token = -torch.minimum(ratio * advantage, clipped * advantage)
    behaviour_weight = None
    if behaviour_logprobs is not None:
        behaviour_weight = torch.exp(old_logprobs - behaviour_logprobs).detach()
        behaviour_weight = behaviour_weight.masked_fill(behaviour_weight > config.behaviour_cap, 0)
        per_token = per_token * behaviour_weight
    kl = None
    if ref_logprobs is not None and config.kl_coef > 0:
        log_ratio = ref_logprobs - logprobs
        kl = torch.exp(log_ratio) - log_ratio - 1
        per_token = per_token + config.kl_coef * kl
    loss = config.rules.reduce(per_token, mask, max_tokens)
    with torch.no_grad():
        tokens = mask.sum().clamp(min=1)
        # Where min() takes the clipped term: the token's gradient is cut.
        low = (ratio < 1 - config.clip_low) & (advantage < 0)
        high = (ratio > 1 + config.clip_high) & (advantage > 0)
        was_clipped = (low | high) & (mask > 0)
        stats = {
            "clip_fraction": float(was_clipped.sum() / tokens),
            "ratio_mean": float((ratio * mask).sum() / tokens),
        }
        if behaviour_weight is not None:
            stats["behaviour_weight"] = float((behaviour_weight * mask).sum() / tokens)
            stats["behaviour_capped"] = float(((behaviour_weight == 0) & (mask > 0)).sum() / tokens)
        if kl is not None:
            stats["kl"] = float((kl * mask).sum() / tokens)
    return loss, stats
