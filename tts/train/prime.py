"""PRIME (`advantage: prime`): an implicit process reward model updated online from the
rollouts' outcome labels, its token rewards used as dense advantages (Cui et al., 2025,
"Process Reinforcement through Implicit Rewards", arXiv 2502.01456, Sec. 3).

- Implicit process reward of token t (their eq. 3; Yuan et al., 2024): r_phi(y_t) =
  beta log pi_phi(y_t | y_<t) / pi_ref(y_t | y_<t), with pi_phi the PRM (a causal LM, started
  from the policy's starting weights unless `prime.model` names another) and pi_ref its frozen
  start (or `prime.reference`).
- PRM update (their eq. 4), on each step's rollouts: cross-entropy between the outcome label
  r_o(y) (the completion's accuracy, 0/1) and sigmoid(beta sum_t log pi_phi / pi_ref), the
  implicit PRM's outcome reward. As their Algorithm 1 does, the rewards used for the policy are
  those of the forward pass that also makes this loss ("single forward": from the PRM before
  the update).
- Advantage (their eq. 5), leave-one-out (RLOO, Ahmadian et al., 2024) for both rewards over
  each group of K completions, returns with gamma = 1:
  A_t^i = sum_{s >= t} [r_phi(y_s^i) - 1/(K - 1) sum_{j != i} r_phi(y^j)]
          + r_o(y^i) - 1/(K - 1) sum_{j != i} r_o(y^j),
  where, as verl's PRIME recipe reads it, r_phi(y^j) is the mean token reward of completion j
  (a per-token baseline, so the baseline does not grow with the length left), and r_o is the
  rule reward. The process term is weighted by `process_weight` (verl's reward_dpo_coef /
  reward_gt_coef, 5 / 5 by default) and the advantages are whitened over the batch's tokens.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field


class ImplicitPRMConfig(BaseModel):
    """PRIME's online implicit PRM."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(
        None, description="causal LM folder the PRM starts from; default the policy's start"
    )
    reference: str | None = Field(
        None, description="the frozen reference of the log-ratio; default the PRM's start"
    )
    beta: float = Field(0.05, gt=0, description="r_phi = beta log pi_phi / pi_ref (PRIME: 0.05)")
    lr: float = Field(1e-5, gt=0, description="the PRM's peak learning rate")
    process_weight: float = Field(
        1.0, ge=0, description="weight of the process rewards against the outcome reward's 1"
    )


def prm_loss(log_ratio_sums: torch.Tensor, labels: torch.Tensor, beta: float) -> torch.Tensor:
    """PRIME's eq. 4 for [B] sums over each completion of log pi_phi / pi_ref and [B] outcome
    labels in {0, 1}: the mean binary cross-entropy of sigmoid(beta * sum)."""
    return torch.nn.functional.binary_cross_entropy_with_logits(
        beta * log_ratio_sums, labels.to(log_ratio_sums.dtype)
    )


def leave_one_out(values: torch.Tensor) -> torch.Tensor:
    """[groups, K] -> each value less the mean of the other K - 1 of its group."""
    k = values.shape[1]
    return values - (values.sum(dim=1, keepdim=True) - values) / (k - 1)


def prime_returns(
    token_rewards: list[torch.Tensor],
    outcomes: list[float],
    group_size: int,
    process_weight: float,
) -> list[torch.Tensor]:
    """PRIME's eq. 5 before whitening: for each completion (consecutive groups of `group_size`),
    its implicit token rewards `token_rewards[i]` ([L_i]) and rule reward `outcomes[i]` -> the
    return at each of its tokens."""
    if not token_rewards:
        return []
    means = torch.stack([rewards.mean() for rewards in token_rewards]).view(-1, group_size)
    process_baseline = (means.sum(dim=1, keepdim=True) - means) / (group_size - 1)
    outcome = leave_one_out(torch.tensor(outcomes, dtype=torch.float64).view(-1, group_size))
    result = []
    for i, rewards in enumerate(token_rewards):
        group, member = divmod(i, group_size)
        centred = rewards.double() - process_baseline[group, member]
        returns = centred.flip(0).cumsum(0).flip(0) * process_weight
        result.append(returns + outcome[group, member])
    return result
