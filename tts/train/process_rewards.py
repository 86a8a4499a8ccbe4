"""Process rewards for PPO: a process reward model's score of each step of a completion, placed
on the step's last token (Wang et al., 2024, "Math-Shepherd", Sec. 3.4: "step-by-step PPO"
rewards each step at its end with the PRM's score; DeepSeekMath's process supervision, Shao et
al., 2024, Sec. 4.1.3, likewise gives each step's end token its reward).

A completion's steps are its decoded text split at `step_separator`, as search splits them, and
any PRM `tts.verifiers.prm.load_scorer` loads scores them: `score(problem, steps)` gives
P(the solution is still right after step k) = s_k. Two ways to turn that into rewards:

- `shaping: score`: r_k = weight * s_k, Math-Shepherd's. Every step earns a positive reward,
  so with gamma = 1 a completion's return grows with its number of steps: on its own it pays
  for length.
- `shaping: delta` (the default): r_k = weight * (s_k - s_{k-1}) with s_0 = 1/2, a
  potential-based shaping (Ng, Harada and Russell, 1999, "Policy invariance under reward
  transformations", Theorem 1, with the PRM's score as the potential): the rewards of a
  completion sum to weight * (s_K - 1/2) whatever its length, and each step is credited with how
  much it moved the PRM's judgement; a slip is blamed on the step that made it. 1/2 is an
  implicit PRM's score of the empty solution (its value there is 0, sigmoid(0) = 1/2) and an
  undecided one for a classifier.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from itertools import accumulate
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from tokenizers.decoders import DecodeStream
from transformers import PreTrainedTokenizerBase

from tts.errors import TTSError
from tts.verifiers.prm import load_scorer
from tts.verifiers.scorer import Scorer

EMPTY_SOLUTION_SCORE = 0.5  # s_0 of `shaping: delta`


class ProcessRewardConfig(BaseModel):
    """Where process rewards come from and how they enter the return."""

    model_config = ConfigDict(extra="forbid")

    prm: str = Field("builtin", description="PRM folder in any format tts loads, or builtin")
    weight: float = Field(1.0, gt=0, description="process rewards are this times the PRM's")
    shaping: Literal["delta", "score"] = Field(
        "delta",
        description="delta: each step the change of the PRM's score (sums to the last score "
        "less 1/2); score: each step the score itself (Math-Shepherd; pays for length)",
    )
    step_separator: str = Field("\n\n", min_length=1, description="text between steps")
    max_batch_size: int = Field(32, ge=1, le=1024, description="solutions per PRM forward")


def step_ends(
    tokenizer: PreTrainedTokenizerBase, tokens: list[int], separator: str
) -> tuple[list[str], list[int]]:
    """The steps of a completion's text (split at `separator`, blank pieces dropped, as
    `tts.data.shepherd.split_steps` does) and the index of the token that ends each: the first
    token by which the text has reached the step's last character. The text is decoded token by
    token (`tokenizers`' incremental decoder, exact across multi-byte characters), so every
    token's end offset comes from one pass."""
    if not tokenizer.is_fast:
        raise TTSError(
            "process rewards place step scores on tokens through a fast (Rust) tokenizer; "
            f"{type(tokenizer).__name__} is not one"
        )
    stream = DecodeStream(skip_special_tokens=True)
    pieces = [stream.step(tokenizer.backend_tokenizer, token) or "" for token in tokens]
    reached = list(accumulate(len(piece) for piece in pieces))
    steps, ends, offset = [], [], 0
    for piece in "".join(pieces).split(separator):
        if piece.strip():
            steps.append(piece)
            ends.append(bisect_left(reached, offset + len(piece.rstrip())))
        offset += len(piece) + len(separator)
    return steps, ends


def shaped(scores: list[float], weight: float, shaping: str) -> list[float]:
    """Each step's reward from the PRM's scores of the steps (the module docstring's two
    forms)."""
    if shaping == "score":
        return [weight * score for score in scores]
    before = [EMPTY_SOLUTION_SCORE, *scores[:-1]]
    return [weight * (score - previous) for score, previous in zip(scores, before)]


class ProcessRewards:
    """A PRM scoring completions into per-token rewards."""

    def __init__(
        self,
        config: ProcessRewardConfig,
        tokenizer: PreTrainedTokenizerBase,
        device: str | torch.device,
    ) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.scorer: Scorer = load_scorer(
            config.prm, device=device, max_batch_size=config.max_batch_size
        )

    def token_rewards(self, problems: list[str], completions: list[list[int]]) -> list[list[float]]:
        """For each completion (its token ids, after the problem `problems[i]`), a reward per
        token: the step rewards on the tokens that end the steps, 0 elsewhere."""

        async def one(problem: str, tokens: list[int]) -> list[float]:
            steps, ends = step_ends(self.tokenizer, tokens, self.config.step_separator)
            scores = await self.scorer.score(problem, steps)
            rewards = [0.0] * len(tokens)
            for end, reward in zip(ends, shaped(scores, self.config.weight, self.config.shaping)):
                rewards[end] += reward
            return rewards

        async def every() -> list[list[float]]:
            return await asyncio.gather(*(one(p, t) for p, t in zip(problems, completions)))

        return asyncio.run(every())
