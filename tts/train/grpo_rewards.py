"""The reward of one GRPO group: rule terms from `tts.verifiers.rewards`, added up by weight.

    reward = correctness                      accuracy (0/1, by `grade_answer`), or Yeo et al.'s
                                              cosine length reward (correct: 2 -> 1, wrong:
                                              -10 -> 0 over the length; -10 at the budget)
           + format_weight * format           DeepSeek-R1's <think> format
           + repetition_weight * repetition   Yeo et al.'s n-gram repetition penalty (<= 0), on
                                              wrong answers only, as their reward/cosine.py
           + kimi_weight * kimi_length        Kimi k1.5's group length penalty
           + overlong                         DAPO's soft overlong punishment, if overlong_cache

Each part is returned too, so the log can show which term moves.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tts.data.grading import grade_answer
from tts.data.problem import Problem
from tts.verifiers import extract_answer
from tts.verifiers.rewards import (
    cosine_length_reward,
    dapo_overlong_penalty,
    format_reward,
    kimi_length_penalty,
    repetition_penalty,
)


class RewardConfig(BaseModel):
    """How a completion's reward is made."""

    model_config = ConfigDict(extra="forbid")

    correctness: Literal["accuracy", "cosine"] = Field(
        "accuracy", description="accuracy (0/1) or the cosine length reward of Yeo et al."
    )
    cosine: dict[str, float] = Field(
        {}, description="cosine_length_reward's values (correct_at_zero, wrong_at_zero, ...)"
    )
    format_weight: float = Field(0.0, ge=0, description="weight of the <think> format reward")
    repetition_weight: float = Field(
        0.0, ge=0, description="weight of the n-gram repetition penalty (wrong answers)"
    )
    repetition_ngram: int = Field(40, ge=1, description="n of the repetition penalty, in tokens")
    kimi_weight: float = Field(0.0, ge=0, description="weight of Kimi k1.5's length penalty")
    overlong_cache: int | None = Field(
        None, ge=1, description="DAPO's soft overlong punishment over the budget's last N tokens"
    )


def group_rewards(
    texts: list[str],
    token_ids: list[list[int]],
    problem: Problem,
    max_tokens: int,
    config: RewardConfig,
) -> tuple[list[float], dict[str, list[float]]]:
    """The total reward of each completion of `problem`, and each part of it. Correctness is
    DeepSeek-R1's verifiable outcome: the answer after the last `</think>` (`extract_answer`,
    so an answer tried inside the thinking earns nothing), graded as every grade in tts is."""
    correct = [grade_answer(problem, extract_answer(text)) for text in texts]
    lengths = [len(ids) for ids in token_ids]
    parts: dict[str, list[float]] = {"accuracy": [float(ok) for ok in correct]}
    if config.correctness == "cosine":
        parts["cosine"] = [
            cosine_length_reward(ok, n, max_tokens, **config.cosine)
            for ok, n in zip(correct, lengths)
        ]
    totals = list(parts[config.correctness])
    if config.format_weight:
        parts["format"] = [format_reward(text) for text in texts]
    if config.repetition_weight:
        parts["repetition"] = [
            0.0 if ok else repetition_penalty(ids, config.repetition_ngram)
            for ok, ids in zip(correct, token_ids)
        ]
    if config.kimi_weight:
        parts["kimi_length"] = kimi_length_penalty(lengths, correct)
    if config.overlong_cache is not None:
        cache = min(config.overlong_cache, max_tokens)
        parts["overlong"] = [dapo_overlong_penalty(n, max_tokens, cache) for n in lengths]
    weights = {
        "format": config.format_weight,
        "repetition": config.repetition_weight,
        "kimi_length": config.kimi_weight,
        "overlong": 1.0,
    }
    for name, weight in weights.items():
        for i, value in enumerate(parts.get(name, [])):
            totals[i] += weight * value
    return totals, parts
