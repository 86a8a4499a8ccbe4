"""One GRPO step's rollouts: draw problems, sample `group_size` completions of each with the
engine, score them with the rule rewards (`tts.train.grpo_rewards`) and give each completion its
group-relative advantage (`tts.train.policy_loss.group_advantages`, as the loss variant scales
it). With dynamic sampling (DAPO, eq. 11) groups whose rewards are all equal are dropped and
more problems are drawn, up to `max_draws` rounds.

Every request is seeded by (seed, step, round, problem), so a resumed run samples what an
uninterrupted one does. Under torchrun every rank draws the same problems (the draw is seeded
by step and round, and the success table is shared after each round) and samples its share of
them, dealt round-robin; each rank's `Rollout` holds its own groups.

Every completion token is tagged with the policy version that sampled it, and in asynchronous
runs with the log-probability the engine gave it (the behaviour policy's, for the decoupled
loss). With partial rollouts (`partial_rollout_tokens`) a sample gets that many tokens per
step; one still going is a `Group` carried to the next step and continued there by its weights.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from tts.data.problem import Problem
from tts.engine import Backend, Completion, SamplingParams
from tts.engine.backend import encode_prompt
from tts.prompts import build_prompt
from tts.train.distributed import ONE_PROCESS, Ranks
from tts.train.draw import ProblemDraw
from tts.train.grpo_config import GRPOConfig
from tts.train.grpo_rewards import group_rewards
from tts.train.policy_loss import group_advantages, informative_groups


@dataclass
class Sample:
    """One completion as it is generated, perhaps over several steps (a partial rollout): its
    tokens, the policy version that sampled each, and each one's log-probability under that
    policy (when the decoupled loss asks for them)."""

    tokens: list[int] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    logprobs: list[float] | None = None  # None: not asked for
    text: str = ""
    finished: bool = False
    truncated: bool = False  # finished by spending the whole token budget
    segments: int = 0


@dataclass
class Group:
    """One problem's `group_size` samples; it enters a batch when all of them have finished."""

    problem: Problem
    prompt_ids: list[int]
    samples: list[Sample]

    @property
    def finished(self) -> bool:
        return all(sample.finished for sample in self.samples)

    @property
    def oldest_version(self) -> int:
        """The version of the oldest policy that sampled any of its tokens."""
        return min((s.versions[0] for s in self.samples if s.versions), default=0)


@dataclass
class Rollout:
    """One step's kept groups: token ids, where each completion starts, rewards, advantages,
    the policy version of each completion token and (asynchronous runs) its log-probability
    under that policy; and how many groups were drawn, carried over or dropped as stale, tokens
    sampled and seconds spent."""

    sequences: list[list[int]] = field(default_factory=list)  # prompt + completion token ids
    starts: list[int] = field(default_factory=list)  # index of each completion's first token
    advantages: list[float] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    parts: dict[str, list[float]] = field(default_factory=dict)  # each reward term's values
    lengths: list[int] = field(default_factory=list)  # completion tokens
    truncated: list[bool] = field(default_factory=list)  # cut off by the token budget
    versions: list[list[int]] = field(default_factory=list)  # per completion token
    behaviour: list[list[float]] = field(default_factory=list)  # per token; [] if not asked
    problems: list[str] = field(default_factory=list)  # each completion's problem text
    # Per completion token, set after the rollout by a critic or PRIME (`advantage: gae` or
    # `prime`); [] with group-relative advantages.
    token_advantages: list[list[float]] = field(default_factory=list)
    groups_drawn: int = 0
    groups_kept: int = 0
    groups_carried: int = 0  # unfinished at the end of the step, continued in the next
    groups_stale: int = 0  # dropped: older than max_staleness versions before they finished
    tokens: int = 0  # completion tokens sampled, dropped groups included
    seconds: float = 0.0

    def add_group(
        self,
        group: Group,
        rewards: list[float],
        parts: dict[str, list[float]],
        advantages: list[float],
    ) -> None:
        """Keep one finished group with its rewards, reward parts and advantages."""
        for sample, reward, advantage in zip(group.samples, rewards, advantages):
            self.sequences.append(group.prompt_ids + sample.tokens)
            self.starts.append(len(group.prompt_ids))
            self.rewards.append(reward)
            self.advantages.append(advantage)
            self.lengths.append(len(sample.tokens))
            self.truncated.append(sample.truncated)
            self.versions.append(sample.versions)
            self.problems.append(group.problem.problem)
            if sample.logprobs is not None:
                self.behaviour.append(sample.logprobs)
        for name, values in parts.items():
            self.parts.setdefault(name, []).extend(values)
        self.groups_kept += 1


def segment_params(config: GRPOConfig, params: SamplingParams, done: int) -> SamplingParams:
    """`params` for one segment of a sample that has `done` tokens: at most
    `partial_rollout_tokens` of the budget left, with the sampled tokens' log-probabilities
    when the decoupled loss needs them (`max_staleness` > 0)."""
    budget = config.max_tokens - done
    if config.partial_rollout_tokens is not None:
        budget = min(budget, config.partial_rollout_tokens)
    logprobs = 0 if config.max_staleness > 0 else None
    return replace(params, max_tokens=budget, logprobs=logprobs)


def extend(
    sample: Sample,
    completion: Completion,
    params: SamplingParams,
    version: int,
    config: GRPOConfig,
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    """Append one segment's tokens to `sample`, tagged with `version`; the sample is finished
    unless the segment stopped at its own budget with the whole budget not yet spent."""
    new = completion.token_ids
    sample.tokens += new
    sample.versions += [version] * len(new)
    if completion.logprobs is not None:
        sample.logprobs = (sample.logprobs or []) + [
            step[token] for step, token in zip(completion.logprobs, new)
        ]
    sample.segments += 1
    paused = len(new) == params.max_tokens and len(sample.tokens) < config.max_tokens
    sample.finished = completion.finish_reason != "length" or not paused
    sample.truncated = completion.finish_reason == "length" and not paused
    # A sample sampled in one piece keeps the engine's text; one continued is decoded whole.
    sample.text = (
        completion.text
        if sample.segments == 1
        else tokenizer.decode(sample.tokens, skip_special_tokens=True)
    )


def sample_groups(
    backend: Backend,
    tokenizer: PreTrainedTokenizerBase,
    problems: list[Problem],
    config: GRPOConfig,
    step: int,
    round_: int,
    version: int,
) -> list[Group]:
    """`group_size` samples of each problem (their first segment), all requests in flight."""

    async def one(problem: Problem) -> Group:
        prompt = build_prompt(tokenizer, problem.problem, config.instruction)
        params = config.sampling_params(config.group_size, "rollout", step, round_, problem.id)
        params = segment_params(config, params, 0)
        group = Group(problem, encode_prompt(tokenizer, prompt), [])
        for completion in await backend.generate(prompt, params):
            group.samples.append(Sample())
            extend(group.samples[-1], completion, params, version, config, tokenizer)
        return group

    async def every() -> list[Group]:
        return await asyncio.gather(*(one(problem) for problem in problems))

    return asyncio.run(every())


def continue_groups(
    backend: Backend,
    tokenizer: PreTrainedTokenizerBase,
    groups: list[Group],
    config: GRPOConfig,
    step: int,
    version: int,
) -> None:
    """One more segment of every unfinished sample of `groups`, sampled by the current weights
    from the prompt and the tokens so far (Kimi k1.5, Sec. 2.6.2, partial rollouts; as AReaL's
    interrupted generations, the KV of those tokens is computed again by the new weights)."""

    async def one(group: Group, index: int) -> None:
        sample = group.samples[index]
        params = config.sampling_params(1, "continue", step, group.problem.id, index)
        params = segment_params(config, params, len(sample.tokens))
        [completion] = await backend.generate(group.prompt_ids + sample.tokens, params)
        extend(sample, completion, params, version, config, tokenizer)

    async def every() -> None:
        await asyncio.gather(
            *(
                one(group, index)
                for group in groups
                for index, sample in enumerate(group.samples)
                if not sample.finished
            )
        )

    asyncio.run(every())


def rollout(
    backend: Backend,
    tokenizer: PreTrainedTokenizerBase,
    draw: ProblemDraw,
    config: GRPOConfig,
    step: int,
    ranks: Ranks = ONE_PROCESS,
    version: int | None = None,
    carried: list[Group] | None = None,
) -> Rollout:
    """Sample, score and keep this rank's share of one step's groups (dynamic sampling draws
    again for dropped ones, as many as every rank together dropped); each problem's success
    rate goes into `draw.success` on every rank.

    `version` is the policy version the backend holds (default: `step`, the synchronous loop);
    the batch is trained at version `step`. With partial rollouts, `carried` holds the groups
    left unfinished by earlier steps: they are continued first and join the batch when they
    finish, and groups still unfinished go back into it, unless they would be older than
    `max_staleness` versions by the next step, when they are dropped. New problems are drawn
    as without them (`prompts_per_step`, a paused group counting as kept), so a step's batch
    holds the groups that finished in it, about `prompts_per_step` once the pipeline is full
    (Kimi k1.5 likewise starts a fixed number of new rollouts each iteration)."""
    result, started = Rollout(), time.perf_counter()
    version = step if version is None else version
    kept = 0  # this step's new groups kept or carried on, by all ranks together
    carried = [] if carried is None else carried

    def settle(group: Group) -> None:
        if not group.finished:
            if step + 1 - group.oldest_version > config.max_staleness:
                result.groups_stale += 1
            else:
                carried.append(group)
            return
        texts = [s.text for s in group.samples]
        ids = [s.tokens for s in group.samples]
        rewards, parts = group_rewards(texts, ids, group.problem, config.max_tokens, config.rewards)
        success[group.problem.id] = sum(parts["accuracy"]) / len(texts)
        table = torch.tensor([rewards], dtype=torch.float64)
        if config.dynamic_sampling and not informative_groups(table)[0]:
            return
        advantages = group_advantages(table, scale=config.loss.rules.scale_advantages)[0]
        result.add_group(group, rewards, parts, advantages.tolist())

    success: dict[str, float] = {}
    if carried:
        groups, carried[:] = list(carried), []
        tokens_before = sum(len(s.tokens) for g in groups for s in g.samples)
        continue_groups(backend, tokenizer, groups, config, step, version)
        result.tokens += sum(len(s.tokens) for g in groups for s in g.samples) - tokens_before
        for group in groups:
            settle(group)
    rounds = config.max_draws if config.dynamic_sampling else 1
    for round_ in range(rounds):
        wanted = config.prompts_per_step - kept
        if wanted <= 0:
            break
        problems = ranks.share(draw.draw(step, round_, wanted))
        before = result.groups_kept + len(carried)
        for group in sample_groups(backend, tokenizer, problems, config, step, round_, version):
            result.groups_drawn += 1
            result.tokens += sum(len(s.tokens) for s in group.samples)
            settle(group)
        for rates in ranks.gather(success):
            draw.success.update(rates)
        success = {}
        kept += int(ranks.sum([result.groups_kept + len(carried) - before])[0])
    draw.success.update(success)
    result.groups_carried = len(carried)
    result.seconds = time.perf_counter() - started
    return result


def share_groups(batch: Rollout, ranks: Ranks, group_size: int) -> Rollout:
    """This rank's part of a whole batch (one sampled by rollout workers), its groups dealt
    round-robin as `rollout` deals problems to ranks that sample for themselves."""
    if not ranks.joined:
        return batch
    keep = [i for i in range(len(batch.sequences)) if i // group_size % ranks.world == ranks.rank]

    def pick(values: list) -> list:
        return [values[i] for i in keep] if values else []

    return replace(
        batch,
        sequences=pick(batch.sequences),
        starts=pick(batch.starts),
        advantages=pick(batch.advantages),
        rewards=pick(batch.rewards),
        lengths=pick(batch.lengths),
        versions=pick(batch.versions),
        behaviour=pick(batch.behaviour),
        problems=pick(batch.problems),
        parts={name: pick(values) for name, values in batch.parts.items()},
    )


def merged(parts: list[Rollout]) -> Rollout:
    """The statistics of every rank's rollout as one, without the sequences."""
    whole = Rollout(seconds=max(part.seconds for part in parts))
    for part in parts:
        whole.rewards += part.rewards
        whole.lengths += part.lengths
        whole.truncated += part.truncated
        whole.versions += part.versions
        for name, values in part.parts.items():
            whole.parts.setdefault(name, []).extend(values)
        whole.groups_drawn += part.groups_drawn
        whole.groups_kept += part.groups_kept
        whole.groups_carried += part.groups_carried
        whole.groups_stale += part.groups_stale
        whole.tokens += part.tokens
    return whole


def rollout_stats(batch: Rollout, step: int, ranks: Ranks = ONE_PROCESS) -> dict[str, float]:
    """The step's log entries about its rollouts, over every rank's groups: mean reward and each
    part, lengths and the share cut off by the token budget, groups, how many versions old its
    oldest token is, sampling speed."""
    if ranks.joined:
        part = replace(batch, sequences=[], starts=[], advantages=[], behaviour=[], problems=[])
        batch = merged(ranks.gather(part))
    lengths = batch.lengths or [0]
    oldest = [min(v, default=step) for v in batch.versions] or [step]
    stats = {
        "reward": float(np.mean(batch.rewards)) if batch.rewards else 0.0,
        "length_mean": float(np.mean(lengths)),
        "length_max": int(max(lengths)),
        "truncated": float(np.mean(batch.truncated)) if batch.truncated else 0.0,
        "groups_kept": batch.groups_kept,
        "groups_drawn": batch.groups_drawn,
        "groups_carried": batch.groups_carried,
        "groups_stale": batch.groups_stale,
        "staleness_max": step - min(oldest),
        "rollout_tokens_per_s": batch.tokens / max(batch.seconds, 1e-9),
    }
    for name, values in batch.parts.items():
        stats[name] = float(np.mean(values))
    stats.setdefault("accuracy", 0.0)
    return stats
