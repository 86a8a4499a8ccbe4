"""GRPO, Dr. GRPO and DAPO losses pinned on small cases worked out by hand."""

from __future__ import annotations

import math
import random
from typing import get_args

import pytest
import torch

from tts.train.policy_loss import (
    VARIANTS,
    LossConfig,
    Variant,
    group_advantages,
    informative_groups,
    micro_weight,
    policy_loss,
)


def test_advantages_are_centred_per_group_and_scaled_by_the_std_unless_dr_grpo():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0]])
    centred = group_advantages(rewards, scale=False)
    assert centred.tolist() == [[0.5, -0.5, -0.5, 0.5], [0.0, 0.0, 0.0, 0.0]]
    scaled = group_advantages(rewards, scale=True)
    std = math.sqrt(4 * 0.25 / 3)  # unbiased
    want = [0.5 / std, -0.5 / std, -0.5 / std, 0.5 / std]
    assert scaled[0].tolist() == pytest.approx(want, rel=1e-4)  # eps 1e-6 in the denominator
    assert scaled[1].tolist() == [0.0] * 4  # equal rewards: no signal, no division by zero


# Shaped rewards (format, cosine length, penalties) that float32 cannot store exactly, and more.
SHAPED = [0.1, 0.7, 0.9] + [random.Random(0).uniform(-2, 2) for _ in range(200)]


@pytest.mark.parametrize("variant", ["grpo", "dr_grpo", "dapo"])
def test_a_group_of_equal_rewards_gets_exactly_zero_advantage_whatever_the_value(variant):
    scale = VARIANTS[variant].scale_advantages  # as the GRPO rollout calls it
    for size in (2, 3, 8, 16):
        for dtype in (torch.float32, torch.float64):
            rewards = torch.tensor([[value] * size for value in SHAPED], dtype=dtype)
            assert group_advantages(rewards, scale).abs().max().item() == 0.0, (size, dtype)
            assert not informative_groups(rewards).any()
    # Equal rewards reached by different sums differ in their last bit: still equal.
    summed = [[0.1 + 0.2 + 0.4, 0.7, 0.7], [0.4 + 0.3 + 0.2, 0.9, 0.9]]
    assert all(len(set(group)) == 2 for group in summed)
    summed = torch.tensor(summed, dtype=torch.float64)
    assert group_advantages(summed, scale).abs().max().item() == 0.0
    assert informative_groups(summed).tolist() == [False, False]


@pytest.mark.parametrize("variant", ["grpo", "dr_grpo", "dapo"])
def test_shaped_rewards_that_differ_get_the_float64_advantages(variant):
    scale = VARIANTS[variant].scale_advantages
    rng = random.Random(1)
    rows = [[rng.choice(SHAPED[:3]) for _ in range(8)] for _ in range(100)]
    rows = [row for row in rows if len(set(row)) > 1]
    advantages = group_advantages(torch.tensor(rows, dtype=torch.float64), scale)
    for row, got in zip(rows, advantages.tolist()):
        mean = math.fsum(row) / len(row)
        std = math.sqrt(math.fsum((r - mean) ** 2 for r in row) / (len(row) - 1))
        want = [(r - mean) / (std + 1e-6 if scale else 1) for r in row]
        assert got == pytest.approx(want, rel=1e-12, abs=1e-12)
        # A completion whose reward is the group's mean learns nothing either way.
        assert math.fsum(got) == pytest.approx(0.0, abs=1e-12)


def test_dynamic_sampling_keeps_only_groups_with_different_rewards():
    rewards = torch.tensor([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0], [-0.5, 0.5]])
    assert informative_groups(rewards).tolist() == [False, True, False, True]


def test_the_table_names_every_variant_the_config_accepts():
    assert set(get_args(Variant)) == set(VARIANTS)
    assert [VARIANTS[v].scale_advantages for v in ("grpo", "dr_grpo", "dapo")] == [1, 0, 1]
    assert [VARIANTS[v].dynamic_sampling for v in ("grpo", "dr_grpo", "dapo")] == [0, 0, 1]


def test_each_variant_normalises_tokens_its_own_way():
    per_token = torch.tensor([[1.0, 1.0, 9.0], [3.0, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])  # 9s are padding
    reduce = {name: variant.reduce for name, variant in VARIANTS.items()}
    assert reduce["grpo"](per_token, mask, 4).item() == pytest.approx((1 + 3) / 2)
    assert reduce["dapo"](per_token, mask, 4).item() == pytest.approx(5 / 3)
    assert reduce["dr_grpo"](per_token, mask, 4).item() == pytest.approx(5 / (2 * 4))


@pytest.mark.parametrize("variant", ["grpo", "dr_grpo", "dapo"])
def test_weighted_micro_batch_losses_add_up_to_the_loss_of_the_whole_step(variant):
    rules = VARIANTS[variant]
    per_token = torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    whole = rules.reduce(per_token, mask, 4).item()
    tokens = int(mask.sum())
    parts = [slice(0, 2), slice(2, 3)]
    summed = sum(
        rules.reduce(per_token[p], mask[p], 4).item() * micro_weight(rules, mask[p], 3, tokens)
        for p in parts
    )
    assert summed == pytest.approx(whole)


def one_token(ratio: float, advantage: float, config: LossConfig):
    old = torch.zeros(1, 1)
    logprobs = torch.full((1, 1), math.log(ratio), requires_grad=True)
    loss, stats = policy_loss(logprobs, old, torch.tensor([advantage]), torch.ones(1, 1), config, 1)
    loss.backward()
    return loss.item(), logprobs.grad.item(), stats["clip_fraction"]


def test_the_ratio_is_clipped_only_where_min_takes_the_clipped_term():
    grpo, dapo = LossConfig(), LossConfig(variant="dapo")
    assert dapo.clip_high == 0.28 and grpo.clip_high == 0.2
    # A > 0, ratio above 1 + eps: the gain is capped and the gradient cut.
    assert one_token(1.5, 1.0, grpo) == pytest.approx((-1.2, 0.0, 1.0))
    assert one_token(1.5, 1.0, dapo) == pytest.approx((-1.28, 0.0, 1.0))  # clip-higher
    # A < 0, ratio above 1 + eps: min keeps the unclipped (worse) term, the gradient flows.
    loss, grad, clipped = one_token(1.5, -1.0, grpo)
    assert (loss, clipped) == pytest.approx((1.5, 0.0)) and grad == pytest.approx(1.5)
    # A > 0 below 1 - eps: unclipped; A < 0 below 1 - eps: clipped at 0.8.
    loss, grad, clipped = one_token(0.5, 1.0, grpo)
    assert (loss, clipped) == pytest.approx((-0.5, 0.0)) and grad == pytest.approx(-0.5)
    assert one_token(0.5, -1.0, grpo) == pytest.approx((0.8, 0.0, 1.0))


def test_on_policy_gradient_is_minus_the_advantage_over_each_normaliser():
    old = torch.zeros(2, 3)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    advantages = torch.tensor([1.0, -2.0])
    expected = {
        "grpo": [[-1 / 2 / 2, -1 / 2 / 2], [2 / 1 / 2]],  # -A / |o_i| / B
        "dapo": [[-1 / 3, -1 / 3], [2 / 3]],  # -A / all tokens
        "dr_grpo": [[-1 / 8, -1 / 8], [2 / 8]],  # -A / (B * max_tokens)
    }
    for variant, want in expected.items():
        logprobs = torch.zeros(2, 3, requires_grad=True)
        loss, _ = policy_loss(logprobs, old, advantages, mask, LossConfig(variant=variant), 4)
        loss.backward()
        grad = logprobs.grad
        assert grad[0, :2].tolist() == pytest.approx(want[0]), variant
        assert grad[1, :1].tolist() == pytest.approx(want[1]), variant
        assert grad[0, 2] == 0 and grad[1, 1:].abs().sum() == 0  # padding gets none


def test_kl_is_the_k3_estimator_and_off_by_default():
    logprobs = torch.full((1, 1), math.log(0.5))
    ref = torch.full((1, 1), math.log(0.25))
    args = (logprobs, logprobs, torch.tensor([0.0]), torch.ones(1, 1))
    loss, stats = policy_loss(*args, LossConfig(kl_coef=0.1), 1, ref_logprobs=ref)
    kl = 0.5 - math.log(0.5) - 1  # pi_ref / pi - log(pi_ref / pi) - 1
    assert stats["kl"] == pytest.approx(kl) and loss.item() == pytest.approx(0.1 * kl)
    loss, stats = policy_loss(*args, LossConfig(), 1, ref_logprobs=ref)
    assert "kl" not in stats and loss.item() == 0.0


def test_the_decoupled_loss_clips_against_the_proximal_policy_and_weighs_by_the_behaviour():
    # pi_theta = 0.55, pi_prox = 0.5, pi_behaviour = 0.25: the ratio is 1.1 (to pi_prox, not
    # 2.2 to the behaviour policy, which the clip would cut), weighed by pi_prox / pi_behaviour.
    logprobs = torch.full((1, 1), math.log(0.55), requires_grad=True)
    prox, behaviour = torch.full((1, 1), math.log(0.5)), torch.full((1, 1), math.log(0.25))
    args = (logprobs, prox, torch.tensor([1.0]), torch.ones(1, 1), LossConfig(), 1)
    loss, stats = policy_loss(*args, behaviour_logprobs=behaviour)
    assert loss.item() == pytest.approx(-2 * 1.1) and stats["behaviour_weight"] == pytest.approx(2)
    loss.backward()
    assert logprobs.grad.item() == pytest.approx(-2 * 1.1)  # d(-w rho A)/d log pi_theta
    # Sampled by the proximal policy itself, the weight is 1: the coupled loss.
    coupled, _ = policy_loss(*args)
    same, _ = policy_loss(*args, behaviour_logprobs=prox)
    assert same.item() == pytest.approx(coupled.item())
    # A weight above the cap (0.5 / 0.05 = 10 > 5) leaves the token out.
    far = torch.full((1, 1), math.log(0.05))
    capped, stats = policy_loss(*args, behaviour_logprobs=far)
    assert capped.item() == 0.0 and stats["behaviour_capped"] == 1.0
