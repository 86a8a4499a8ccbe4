"""Speculative decoding's verification: which drafted tokens a step keeps.

A decoding sequence with a draft d_1..d_k (from `drafter.py`) computes k + 1 positions in one
forward pass: its last sampled token, then the draft. Position j's logits give the distribution
of the token after d_1..d_j. The sampler draws a token x_j at every one of these positions
exactly as it would without speculation (the same processed distribution: temperature, top-k,
top-p, min-p; one uniform number per position), and the step keeps x_0, x_1, ... while x_j
equals d_{j+1}, then the first x_j that does not (or x_k, a bonus token, when all of the draft
holds). A step therefore always yields at least one token, and at most k + 1.

Why the output is exactly that of sampling without speculation:

- Greedy: x_j is the argmax at position j, so the kept tokens are the greedy ones.
- Sampling: this is the speculative sampling rule (Leviathan et al. 2023, Chen et al. 2023) for
  a draft that puts all its mass on d: accept d with probability min(1, p(d) / q(d)) = p(d),
  and on rejection draw from norm(max(0, p - q)), which is p with d's mass removed,
  renormalised. Drawing x ~ p and accepting d iff x = d does both with one draw: P(x = d) =
  p(d), and x given x != d is distributed as that residual. Position j + 1 is only read once
  x_j = d_{j+1}, so its distribution is conditioned on the token that was really emitted.
- Seeds: a seeded sequence's stream is rewound (`replay`) to one number per kept token, as
  without speculation, so it samples the same tokens whatever was drafted, whatever else ran.

The tokens match those of plain decoding up to floating-point differences between the two
attention paths (a multi-token chunk attends like a prefill chunk).
"""

from __future__ import annotations

import torch

from tts.engine.native.sampler import uniform


def kept_tokens(draft: list[int], sampled: list[int]) -> list[int]:
    """The tokens a step emits from `sampled` (len(draft) + 1 tokens; sampled[j] was drawn at
    the position after draft[:j]): those that match the draft, then the first that does not."""
    for j, token in enumerate(draft):
        if sampled[j] != token:
            return sampled[: j + 1]
    return sampled


def replay(generator: torch.Generator, state: torch.Tensor, draws: int) -> None:
    """Put `generator` where `draws` of the sampler's draws from `state` leave it: a verified
    draft draws at every position, but only the positions kept may consume the stream."""
    generator.set_state(state)
    for _ in range(draws):
        uniform(generator)
