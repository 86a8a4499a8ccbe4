"""The optimizer every training loop uses and its learning-rate schedule (a pure function of
the step, nanoGPT's `get_lr`), so a resumed run follows the schedule an uninterrupted one does."""

from __future__ import annotations

import math

import torch

from tts.train.recipe import TrainConfig


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW (betas 0.9, 0.95) with weight decay on matrices only, not on norms and biases."""
    return torch.optim.AdamW(
        [
            {"params": [p for p in model.parameters() if p.dim() >= 2]},
            {"params": [p for p in model.parameters() if p.dim() < 2], "weight_decay": 0.0},
        ],
        lr=config.lr,
        betas=(0.9, 0.95),
        weight_decay=config.weight_decay,
    )


def lr_at(step: int, config: TrainConfig) -> float:
    """Linear warmup to lr, then cosine decay to min_lr at max_steps."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(config.max_steps - config.warmup_steps, 1)
    return config.min_lr + 0.5 * (config.lr - config.min_lr) * (1 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, step: int, config: TrainConfig) -> float:
    """Give every parameter group the learning rate of optimizer step `step`; return it."""
    lr = lr_at(step, config)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr
