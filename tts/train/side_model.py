"""A model trained beside the policy in the RL loop, with its own optimizer and learning rate:
PPO's critic (`tts.train.critic`) and PRIME's implicit PRM (`tts.train.prime`).

It is placed as the policy is (sharded by FSDP2 under torchrun, `tts.train.distributed.shard`),
follows the policy's learning-rate schedule scaled to its own peak, and travels inside the
policy's checkpoint (`trainer_state.pt` holds its weights and optimizer state), so one atomic
checkpoint resumes both.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import PreTrainedModel

from tts.train.distributed import (
    Ranks,
    as_float,
    full_weights,
    optimizer_loader,
    optimizer_state,
    shard,
)
from tts.train.grpo_config import GRPOConfig
from tts.train.optimizer import lr_at, make_optimizer


class SideModel:
    """`model` (loaded whole, not yet placed) trained with AdamW at peak learning rate `lr`;
    `state`, when resuming, is what `state()` saved."""

    def __init__(
        self,
        model: PreTrainedModel,
        lr: float,
        config: GRPOConfig,
        ranks: Ranks,
        device: torch.device,
        state: dict[str, Any] | None,
    ) -> None:
        if state is not None:
            model.load_state_dict(state["weights"])
        model = model.to(device)
        self.model = shard(
            model, ranks, device, config.activation_checkpointing, config.mixed_precision
        )
        self.optimizer = make_optimizer(self.model, config)
        self.ranks = ranks
        self.lr = lr
        if state is not None:
            optimizer_loader(self.model, self.optimizer, ranks)(state["optimizer"])

    def set_lr(self, step: int, config: GRPOConfig) -> None:
        """The policy's schedule at `step`, scaled from its peak `config.lr` to this model's."""
        lr = lr_at(step, config) * self.lr / config.lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def step(self, grad_clip: float) -> float:
        """One optimizer step on the gradients accumulated; the gradient norm before clipping."""
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return as_float(norm)

    def state(self) -> dict[str, Any]:
        """Weights and optimizer state for the checkpoint (a collective under torchrun)."""
        return {
            "weights": full_weights(self.model, self.ranks),
            "optimizer": optimizer_state(self.model, self.optimizer, self.ranks),
        }
