"""One GRPO step's rollouts: draw problems, sample `group_size` completions of each with the
engine, score them with the rule rewards (`tts.train.grpo_rewards`) and give each completion its
group-relative advantage (`tts.train.policy_loss.group_advantages`, as the loss variant scales
it). With dynamic sampling (DAPO, eq. 11) groups whose rewards are all equal are dropped and
more problems are drawn, up to `max_draws` rounds.

Every request is seeded by (seed, step, round, problem), so a resumed run samples what an
uninterrupted one does. Under torchrun every rank draws the same problems (the draw is seeded
by step and round, and the success table is shared after each round) and samples its share of
them, dealt round-robin; each rank's `Rollout` holds its own groups.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from tts.data.problem import Problem
from tts.engine import Backend, Completion
from tts.engine.backend import encode_prompt
from tts.prompts import build_prompt
from tts.train.distributed import ONE_PROCESS, Ranks
from tts.train.draw import ProblemDraw
from tts.train.grpo_config import GRPOConfig
from tts.train.grpo_rewards import group_rewards
from tts.train.policy_loss import group_advantages, informative_groups


@dataclass
class Rollout:
    """One step's kept groups: token ids, where each completion starts, rewards, advantages;
    and how many groups were drawn, tokens sampled and seconds spent."""

    sequences: list[list[int]] = field(default_factory=list)  # prompt + completion token ids
    starts: list[int] = field(default_factory=list)  # index of each completion's first token
    advantages: list[float] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    parts: dict[str, list[float]] = field(default_factory=dict)  # each reward term's values
    lengths: list[int] = field(default_factory=list)  # completion tokens
    groups_drawn: int = 0
    groups_kept: int = 0
    tokens: int = 0  # completion tokens sampled, dropped groups included
    seconds: float = 0.0

    def add_group(
        self,
        prompt_ids: list[int],
        completions: list[Completion],
        rewards: list[float],
        parts: dict[str, list[float]],
        advantages: list[float],
    ) -> None:
        """Keep one problem's completions with their rewards, reward parts and advantages."""
        for completion, reward, advantage in zip(completions, rewards, advantages):
            self.sequences.append(prompt_ids + completion.token_ids)
            self.starts.append(len(prompt_ids))
            self.rewards.append(reward)
            self.advantages.append(advantage)
            self.lengths.append(len(completion.token_ids))
        for name, values in parts.items():
            self.parts.setdefault(name, []).extend(values)
        self.groups_kept += 1


def sample_groups(
    backend: Backend,
    tokenizer: PreTrainedTokenizerBase,
    problems: list[Problem],
    config: GRPOConfig,
    step: int,
    round_: int,
) -> list[tuple[Problem, list[int], list[Completion]]]:
    """`group_size` completions of each problem, all requests in flight at once."""

    async def one(problem: Problem) -> tuple[Problem, list[int], list[Completion]]:
        prompt = build_prompt(tokenizer, problem.problem, config.instruction)
        params = config.sampling_params(config.group_size, "rollout", step, round_, problem.id)
        return problem, encode_prompt(tokenizer, prompt), await backend.generate(prompt, params)

    async def every() -> list[tuple[Problem, list[int], list[Completion]]]:
        return await asyncio.gather(*(one(problem) for problem in problems))

    return asyncio.run(every())


def rollout(
    backend: Backend,
    tokenizer: PreTrainedTokenizerBase,
    draw: ProblemDraw,
    config: GRPOConfig,
    step: int,
    ranks: Ranks = ONE_PROCESS,
) -> Rollout:
    """Sample, score and keep this rank's share of one step's groups (dynamic sampling draws
    again for dropped ones, as many as every rank together dropped); each problem's success
    rate goes into `draw.success` on every rank."""
    result, started = Rollout(), time.perf_counter()
    rounds = config.max_draws if config.dynamic_sampling else 1
    kept = 0  # groups kept by all ranks together
    for round_ in range(rounds):
        wanted = config.prompts_per_step - kept
        if wanted <= 0:
            break
        problems = ranks.share(draw.draw(step, round_, wanted))
        success, kept_before = {}, result.groups_kept
        for problem, prompt_ids, completions in sample_groups(
            backend, tokenizer, problems, config, step, round_
        ):
            texts = [c.text for c in completions]
            ids = [c.token_ids for c in completions]
            rewards, parts = group_rewards(
                texts, ids, problem.answer, config.max_tokens, config.rewards
            )
            success[problem.id] = sum(parts["accuracy"]) / len(texts)
            result.groups_drawn += 1
            result.tokens += sum(len(i) for i in ids)
            table = torch.tensor([rewards], dtype=torch.float64)
            if config.dynamic_sampling and not informative_groups(table)[0]:
                continue
            advantages = group_advantages(table, scale=config.loss.rules.scale_advantages)[0]
            result.add_group(prompt_ids, completions, rewards, parts, advantages.tolist())
        for rates in ranks.gather(success):
            draw.success.update(rates)
        kept += int(ranks.sum([result.groups_kept - kept_before])[0])
    result.seconds = time.perf_counter() - started
    return result


def merged(parts: list[Rollout]) -> Rollout:
    """The statistics of every rank's rollout as one, without the sequences."""
    whole = Rollout(seconds=max(part.seconds for part in parts))
    for part in parts:
        whole.rewards += part.rewards
        whole.lengths += part.lengths
        for name, values in part.parts.items():
            whole.parts.setdefault(name, []).extend(values)
        whole.groups_drawn += part.groups_drawn
        whole.groups_kept += part.groups_kept
        whole.tokens += part.tokens
    return whole


def rollout_stats(batch: Rollout, ranks: Ranks = ONE_PROCESS) -> dict[str, float]:
    """The step's log entries about its rollouts, over every rank's groups: mean reward and each
    part, lengths, groups, sampling speed."""
    if ranks.joined:
        batch = merged(ranks.gather(replace(batch, sequences=[], starts=[], advantages=[])))
    lengths = batch.lengths or [0]
    stats = {
        "reward": float(np.mean(batch.rewards)) if batch.rewards else 0.0,
        "length_mean": float(np.mean(lengths)),
        "length_max": int(max(lengths)),
        "groups_kept": batch.groups_kept,
        "groups_drawn": batch.groups_drawn,
        "rollout_tokens_per_s": batch.tokens / max(batch.seconds, 1e-9),
    }
    for name, values in batch.parts.items():
        stats[name] = float(np.mean(values))
    stats.setdefault("accuracy", 0.0)
    return stats
