"""GRPO: reinforcement learning with verifiable rewards, rolled out by the native engine in
process.

One step (Shao et al., 2024, "DeepSeekMath", Sec. 4.1; the DeepSeek-R1 recipe):

1. draw `prompts_per_step` training problems: uniformly, by a curriculum from easy to hard, or
   by failure rate (Kimi k1.5, Sec. 2.3.4: P(problem) proportional to 1 - its success rate);
2. the native engine samples `group_size` completions of each with the current weights;
3. rule rewards score them (`tts.train.grpo_rewards`); advantages are group-relative; with
   dynamic sampling (DAPO) groups whose rewards are all equal are dropped and more problems are
   drawn, up to `max_draws` rounds;
4. `epochs` passes of the policy loss (`tts.train.policy_loss`: grpo, dr_grpo or dapo) over
   the rollouts in micro-batches, one optimizer step per pass;
5. the trainer's weights go into the engine (`NativeBackend.update_weights`: no reload from
   disk), which also forgets its prefix cache.

Log lines (`OUT/log.jsonl`, one per step): the reward and each of its parts, accuracy, mean and
max completion length, loss, clip fraction, entropy, KL (with a reference), groups kept, tokens
per second of rollout and of training; every `eval_every` steps, pass@1 on `eval_dataset`
(`eval_samples` samples per problem at the rollout temperature, the same seeds every time).
Checkpoints (`OUT/checkpoint/`, a Hugging Face folder plus optimizer, step, RNG and the success
table) are written atomically; the same command resumes from one, and because the rollouts of
step s are seeded by (seed, s) a resumed run continues as the uninterrupted one would.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer

from tts.data.datasets import Problem, load_dataset
from tts.devices import resolve_device
from tts.engine import SamplingParams, load
from tts.engine.backend import Completion, encode_prompt
from tts.errors import TTSError
from tts.prompts import DEFAULT_INSTRUCTION, build_prompt
from tts.seeds import derive_seed
from tts.train.grpo_rewards import RewardConfig, group_rewards
from tts.train.loop import (
    LoopConfig,
    load_recipe,
    lr_at,
    make_optimizer,
    model_folder,
    open_log,
    resume_state,
    save,
)
from tts.train.policy_loss import LossConfig, group_advantages, informative_groups, policy_loss
from tts.verifiers import is_correct
from tts.verifiers.extract import extract_answer


class GRPOConfig(LoopConfig):
    """One GRPO run. `batch_size` (LoopConfig) is the micro-batch of sequences per forward."""

    model: str = Field("builtin", description="causal LM folder to start from, or builtin")
    dataset: str = Field("synth:arith:3:2000:train", description="training problems")
    sampling: Literal["uniform", "curriculum", "failure"] = Field(
        "uniform", description="how problems are drawn (curriculum needs pass rates)"
    )
    prompts_per_step: int = Field(16, ge=1, description="problems (groups) per step")
    group_size: int = Field(8, ge=2, description="completions per problem (G)")
    temperature: float = Field(1.0, gt=0, description="rollout temperature")
    top_p: float = Field(1.0, gt=0, le=1, description="rollout nucleus mass")
    max_tokens: int = Field(256, ge=1, description="rollout token budget")
    instruction: str = Field(DEFAULT_INSTRUCTION, description="appended to each problem")
    loss: LossConfig = Field(default_factory=LossConfig, description="policy loss")
    rewards: RewardConfig = Field(default_factory=RewardConfig, description="reward terms")
    dynamic_sampling: bool | None = Field(
        None, description="drop groups of equal rewards and draw more; default: on for dapo"
    )
    max_draws: int = Field(3, ge=1, description="draw rounds per step with dynamic sampling")
    epochs: int = Field(1, ge=1, description="optimizer steps over each step's rollouts")
    eval_dataset: str | None = Field("synth:arith:3", description="held-out pass@1 set")
    eval_limit: int = Field(100, ge=1, description="eval problems")
    eval_samples: int = Field(4, ge=1, description="samples per eval problem")
    eval_every: int = Field(25, ge=1, description="steps between evaluations")
    engine_blocks: int = Field(4096, ge=16, description="KV blocks of the rollout engine")

    @model_validator(mode="after")
    def _defaults(self) -> GRPOConfig:
        if self.dynamic_sampling is None:
            self.dynamic_sampling = self.loss.variant == "dapo"
        return self

    def sampling_params(self, n: int, *seed_parts: object) -> SamplingParams:
        """`n` samples at the rollout settings, seeded by the run seed and `seed_parts`."""
        return SamplingParams(
            n=n,
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=self.max_tokens,
            seed=derive_seed(self.seed, *seed_parts),
        )


def load_config(path: str | Path, **overrides: object) -> GRPOConfig:
    """A GRPOConfig from a YAML recipe, with command-line overrides on top."""
    return load_recipe(GRPOConfig, path, overrides)


class ProblemSampler:
    """Draws training problems by `sampling`; `success` holds the last success rate seen per
    problem (failure sampling weighs by 1 - it; unseen problems start at their pass rate from
    `tts data difficulty` if the dataset has one, else 0)."""

    def __init__(self, problems: list[Problem], config: GRPOConfig) -> None:
        self.problems, self.config = problems, config
        rates = [p.metadata.get("pass_rate") for p in problems]
        if config.sampling == "curriculum" and None in rates:
            raise TTSError(
                f"curriculum sampling needs pass rates: make {config.dataset} with "
                "`tts data difficulty` and train on its output"
            )
        self.success = {p.id: float(r or 0.0) for p, r in zip(problems, rates)}
        # Easiest first: the curriculum's order.
        self.by_ease = sorted(problems, key=lambda p: -self.success[p.id])

    def draw(self, step: int, round_: int, count: int) -> list[Problem]:
        rng = random.Random(derive_seed(self.config.seed, "draw", step, round_))
        if self.config.sampling == "uniform":
            return rng.sample(self.problems, min(count, len(self.problems)))
        if self.config.sampling == "curriculum":
            # The pool grows linearly from the easiest quarter to every problem at half of
            # training, then stays whole.
            share = min(1.0, 0.25 + 1.5 * step / self.config.max_steps)
            pool = self.by_ease[: max(count, math.ceil(share * len(self.by_ease)))]
            return rng.sample(pool, min(count, len(pool)))
        weights = [1.0 - self.success[p.id] + 1e-3 for p in self.problems]
        picked = np.random.default_rng(rng.getrandbits(32)).choice(
            len(self.problems),
            size=min(count, len(self.problems)),
            replace=False,
            p=np.array(weights) / sum(weights),
        )
        return [self.problems[i] for i in picked]


class Rollout:
    """One step's groups: token ids, where each completion starts, rewards, advantages."""

    def __init__(self) -> None:
        self.sequences: list[list[int]] = []
        self.starts: list[int] = []  # index of each sequence's first completion token
        self.advantages: list[float] = []
        self.rewards: list[float] = []
        self.parts: dict[str, list[float]] = {}
        self.lengths: list[int] = []
        self.groups_drawn = 0
        self.groups_kept = 0
        self.tokens = 0
        self.seconds = 0.0

    def add_group(self, prompt_ids, completions: list[Completion], rewards, parts, advantages):
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
    backend, tokenizer, problems: list[Problem], config: GRPOConfig, step: int, round_: int
) -> list[tuple[Problem, list[int], list[Completion]]]:
    """`group_size` completions of each problem, all requests in flight at once."""

    async def one(problem: Problem):
        prompt = build_prompt(tokenizer, problem.problem, config.instruction)
        params = config.sampling_params(config.group_size, "rollout", step, round_, problem.id)
        return problem, encode_prompt(tokenizer, prompt), await backend.generate(prompt, params)

    async def every():
        return await asyncio.gather(*(one(problem) for problem in problems))

    return asyncio.run(every())


def rollout(backend, tokenizer, sampler: ProblemSampler, config: GRPOConfig, step: int) -> Rollout:
    """Sample, score and keep one step's groups (dynamic sampling draws again for dropped ones)."""
    result, started = Rollout(), time.perf_counter()
    rounds = config.max_draws if config.dynamic_sampling else 1
    for round_ in range(rounds):
        wanted = config.prompts_per_step - result.groups_kept
        if wanted <= 0:
            break
        problems = sampler.draw(step, round_, wanted)
        for problem, prompt_ids, completions in sample_groups(
            backend, tokenizer, problems, config, step, round_
        ):
            texts = [c.text for c in completions]
            ids = [c.token_ids for c in completions]
            rewards, parts = group_rewards(
                texts, ids, problem.answer, config.max_tokens, config.rewards
            )
            sampler.success[problem.id] = sum(parts["accuracy"]) / len(texts)
            result.groups_drawn += 1
            result.tokens += sum(len(i) for i in ids)
            table = torch.tensor([rewards], dtype=torch.float64)
            if config.dynamic_sampling and not informative_groups(table)[0]:
                continue
            advantages = group_advantages(table, scale=config.loss.variant != "dr_grpo")[0]
            result.add_group(prompt_ids, completions, rewards, parts, advantages.tolist())
    result.seconds = time.perf_counter() - started
    return result


def token_logprobs(model, batch: list[list[int]], starts: list[int], pad_id: int, config):
    """Log-probabilities of each sequence's completion tokens (at the rollout temperature, as
    the engine sampled them), their mask and the mean entropy, as [B, T] tensors."""
    device = next(model.parameters()).device
    width = max(len(seq) for seq in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    mask = torch.zeros((len(batch), width - 1))
    for row, (seq, start) in enumerate(zip(batch, starts)):
        ids[row, : len(seq)] = torch.tensor(seq)
        attention[row, : len(seq)] = 1
        mask[row, start - 1 : len(seq) - 1] = 1  # position t predicts token t + 1
    ids, attention, mask = ids.to(device), attention.to(device), mask.to(device)
    logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1].float()
    logits = logits / config.temperature
    logprobs = torch.log_softmax(logits, dim=-1)
    chosen = logprobs.gather(-1, ids[:, 1:, None]).squeeze(-1)
    with torch.no_grad():
        entropy = -(logprobs.exp() * logprobs).sum(-1)
        mean_entropy = float((entropy * mask).sum() / mask.sum().clamp(min=1))
    return chosen, mask, mean_entropy


def micro_weight(variant: str, mask: torch.Tensor, sequences: int, tokens: int) -> float:
    """The share of the whole step's normaliser in one micro-batch, so that summing weighted
    micro-batch losses gives the loss over the whole step (sequence, token or constant)."""
    if variant == "dapo":
        return float(mask.sum()) / tokens
    return mask.shape[0] / sequences


def train_grpo(config: GRPOConfig) -> dict[str, Any]:
    """Train (or resume); return the final folder and the last eval."""
    problems = load_dataset(config.dataset)
    sampler = ProblemSampler(problems, config)
    state = resume_state(config)
    start = config.out / "checkpoint" if state is not None else model_folder(config.model)
    device = resolve_device(config.device)
    tokenizer = AutoTokenizer.from_pretrained(start)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    model = AutoModelForCausalLM.from_pretrained(start, dtype=torch.float32).to(device)
    reference = None
    if config.loss.kl_coef > 0:
        reference = AutoModelForCausalLM.from_pretrained(
            model_folder(config.model), dtype=torch.float32
        ).to(device)
        reference.eval().requires_grad_(False)
    backend = load(
        model_folder(config.model), "native", device=str(device), num_blocks=config.engine_blocks
    )
    backend.update_weights(model.state_dict().items())
    optimizer = make_optimizer(model, config)
    step = 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        sampler.success = state["success"]
        step = state["step"]
    log = open_log(config, step)
    last_eval: dict[str, float] = {}
    if step == 0 and config.eval_dataset:
        last_eval = evaluate(backend, tokenizer, config)
        log.write({"step": 0, **last_eval})
    bar = tqdm(total=config.max_steps, initial=step, desc="grpo", unit="step")
    while step < config.max_steps:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, config)
        batch = rollout(backend, tokenizer, sampler, config, step)
        record = {"step": step + 1, "lr": lr_at(step, config)}
        record |= rollout_stats(batch)
        if batch.sequences:
            record |= update(model, reference, optimizer, batch, pad_id, config)
            backend.update_weights(model.state_dict().items())
        step += 1
        log.write(record)
        bar.update()
        bar.set_postfix(reward=f"{record['reward']:.2f}", acc=f"{record['accuracy']:.2f}")
        evaluate_now = config.eval_dataset and (
            step % config.eval_every == 0 or step == config.max_steps
        )
        if evaluate_now:
            last_eval = evaluate(backend, tokenizer, config)
            log.write({"step": step, **last_eval})
        if step % config.save_every == 0 or step == config.max_steps:
            checkpoint = {
                "optimizer": optimizer.state_dict(),
                "step": step,
                "rng": torch.get_rng_state(),
                "config": config.model_dump(mode="json"),
                "success": sampler.success,
            }
            save(model, tokenizer, config.out / "checkpoint", checkpoint)
    bar.close()
    log.close()
    final = config.out / "final"
    save(model, tokenizer, final)
    return {"final": str(final), **last_eval}


def rollout_stats(batch: Rollout) -> dict[str, float]:
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


def update(model, reference, optimizer, batch: Rollout, pad_id: int, config: GRPOConfig):
    """`epochs` optimizer steps of the policy loss over the rollouts; their statistics."""
    model.train()
    order = sorted(range(len(batch.sequences)), key=lambda i: len(batch.sequences[i]))
    micros = [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]
    sequences = len(order)
    tokens = sum(len(batch.sequences[i]) - batch.starts[i] for i in order)
    old: dict[int, torch.Tensor] = {}
    if config.epochs > 1:  # the ratio's denominator: the policy that sampled, before any step
        with torch.no_grad():
            for micro in micros:
                seqs = [batch.sequences[i] for i in micro]
                logprobs, _, _ = token_logprobs(
                    model, seqs, [batch.starts[i] for i in micro], pad_id, config
                )
                old[micro[0]] = logprobs
    started, totals = time.perf_counter(), {}
    for _ in range(config.epochs):
        sums = {"loss": 0.0, "clip_fraction": 0.0, "entropy": 0.0, "kl": 0.0}
        for micro in micros:
            seqs = [batch.sequences[i] for i in micro]
            starts = [batch.starts[i] for i in micro]
            logprobs, mask, entropy = token_logprobs(model, seqs, starts, pad_id, config)
            ref = None
            if reference is not None:
                with torch.no_grad():
                    ref, _, _ = token_logprobs(reference, seqs, starts, pad_id, config)
            advantages = torch.tensor([batch.advantages[i] for i in micro], device=mask.device)
            previous = old.get(micro[0], logprobs.detach())
            loss, stats = policy_loss(
                logprobs, previous, advantages, mask, config.loss, config.max_tokens, ref
            )
            weight = micro_weight(config.loss.variant, mask, sequences, tokens)
            (loss * weight).backward()
            sums["loss"] += loss.item() * weight
            sums["clip_fraction"] += stats["clip_fraction"] * weight
            sums["entropy"] += entropy * weight
            sums["kl"] += stats.get("kl", 0.0) * weight
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        totals = sums | {"grad_norm": float(norm)}
    seconds = time.perf_counter() - started
    if reference is None:
        totals.pop("kl")
    model.eval()
    return totals | {"train_tokens_per_s": config.epochs * tokens / max(seconds, 1e-9)}


def evaluate(backend, tokenizer, config: GRPOConfig) -> dict[str, float]:
    """pass@1 on the eval set: the mean accuracy of `eval_samples` samples per problem at the
    rollout temperature, with the same seeds at every evaluation."""
    problems = load_dataset(config.eval_dataset, config.eval_limit)

    async def one(problem: Problem) -> float:
        prompt = build_prompt(tokenizer, problem.problem, config.instruction)
        params = config.sampling_params(config.eval_samples, "eval", problem.id)
        completions = await backend.generate(prompt, params)
        right = [is_correct(extract_answer(c.text), problem.answer) for c in completions]
        return sum(right) / len(right)

    async def every():
        return await asyncio.gather(*(one(problem) for problem in problems))

    scores = asyncio.run(every())
    return {"eval_pass@1": float(np.mean(scores))}
