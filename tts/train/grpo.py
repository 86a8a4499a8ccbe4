"""The RL loop (`tts train grpo`, `ppo`, `prime`): reinforcement learning with verifiable
rewards, rolled out by the native engine in process or by rollout workers on Ray. This module is
the loop; each part of a step has its own module.

One step (Shao et al., 2024, "DeepSeekMath", Sec. 4.1; the DeepSeek-R1 recipe):

1. draw `prompts_per_step` training problems (`tts.train.draw`: uniformly, by a curriculum
   from easy to hard, or by failure rate);
2. the native engine samples `group_size` completions of each with the current weights, rule
   rewards score them and advantages are group-relative (`tts.train.rollout`; with dynamic
   sampling, groups whose rewards are all equal are dropped and more problems drawn);
3. `epochs` passes of the policy loss over the rollouts in micro-batches, one optimizer step
   per pass (`tts.train.policy_update`; the loss variants are `tts.train.policy_loss`'s table);
4. the trainer's weights, version s + 1, are published to the engine (`NativeBackend.
   update_weights`: no reload from disk), which also forgets its prefix cache.

`advantage` says where the advantages of step 3 come from: `group`, the group-relative ones of
step 2 (GRPO and its variants); `gae`, a critic trained beside the policy, GAE over tokens of the
outcome and optionally a PRM's process rewards (PPO, `tts train ppo`: `tts.train.critic`);
`prime`, an implicit PRM trained online on the outcomes, its token rewards leave-one-out (PRIME,
`tts train prime`: `tts.train.online_prm`). The critic and the PRM are computed on the trainer
after the batch arrives, so every placement below works with each.

Batches come from `tts.train.rollout_pipeline`: in the synchronous loop (`max_staleness` 0) the
batch of step s is sampled by version s after the update that made it; with rollout workers
(`tts.train.rollout_worker`, on Ray) and `max_staleness` eta > 0 the workers sample up to eta
versions ahead while the trainer updates, and the loss corrects for the staleness (the
decoupled objective of `tts.train.policy_loss`). docs/rl_scaling.md has the placements.

The engine shares the trainer's device, so with `release_engine_memory` (the default on an
accelerator) its KV cache is freed for steps 3-4 (`NativeBackend.release_memory`) and
allocated again before the next rollout: the backward pass gets that memory.

Under `torchrun --nproc_per_node N` (`tts.train.distributed`) each rank runs this loop with its
own engine: it rolls out its share of the step's groups, trains the FSDP2-sharded model on
them with the loss normalised over every rank's batch, and takes the whole weights into its
engine after the update. Logged statistics cover every rank; rank 0 alone evaluates and writes
the log, checkpoints and the final folder.

Log lines (`OUT/log.jsonl`, one per step): the reward and each of its parts, accuracy, mean and
max completion length, loss, clip fraction, entropy, KL (with a reference), groups kept, tokens
per second of rollout and of training; every `eval_every` steps, pass@1 on `eval_dataset`
(`tts.train.evaluate`: `eval_samples` samples per problem at the rollout temperature, the same
seeds every time). Checkpoints (`OUT/checkpoint/`, a Hugging Face folder plus optimizer, step,
RNG and the success table) are written atomically; the same command resumes from one, and
because the rollouts of step s are seeded by (seed, s) a resumed run continues as the
uninterrupted one would.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from tts.data.datasets import load_dataset
from tts.data.jsonl import RecordWriter
from tts.engine import Backend, load
from tts.train.checkpoint import open_log, restore, resume_state, save, trainer_state
from tts.train.critic import Critic
from tts.train.distributed import (
    ONE_PROCESS,
    Ranks,
    full_weights,
    join,
    leave,
    optimizer_loader,
    optimizer_state,
    shard,
)
from tts.train.draw import ProblemDraw
from tts.train.evaluate import pass_at_1
from tts.train.grpo_config import GRPOConfig, PPOConfig, PRIMEConfig
from tts.train.online_prm import OnlinePRM
from tts.train.optimizer import make_optimizer, set_lr
from tts.train.policy_update import update
from tts.train.recipe import load_recipe, model_folder
from tts.train.rollout import Rollout, rollout_stats, share_groups
from tts.train.rollout_pipeline import RolloutPipeline
from tts.train.rollout_worker import WorkerPool
from tts.verifiers.prm.load import PRM_CONFIG

LOOP_NAMES = {"group": "grpo", "gae": "ppo", "prime": "prime"}  # the progress bar's


def load_config(path: str | Path, **overrides: object) -> GRPOConfig:
    """A GRPOConfig from a YAML recipe, with command-line overrides on top."""
    return load_recipe(GRPOConfig, path, overrides)


def load_ppo_config(path: str | Path, **overrides: object) -> PPOConfig:
    """`tts train ppo`'s config: advantage gae unless the recipe says otherwise."""
    return load_recipe(PPOConfig, path, overrides)


def load_prime_config(path: str | Path, **overrides: object) -> PRIMEConfig:
    """`tts train prime`'s config: advantage prime."""
    return load_recipe(PRIMEConfig, path, overrides)


def evaluate(backend: Backend, config: GRPOConfig) -> dict[str, float]:
    """pass@1 on the eval set: `eval_samples` samples per problem at the rollout settings, with
    the same seeds at every evaluation."""
    problems = load_dataset(config.eval_dataset, config.eval_limit)
    score = pass_at_1(
        backend,
        problems,
        config.instruction,
        lambda problem: config.sampling_params(config.eval_samples, "eval", problem.id),
    )
    return {"eval_pass@1": score}


def open_pipeline(
    config: GRPOConfig,
    device: torch.device,
    tokenizer: PreTrainedTokenizerBase,
    draw: ProblemDraw,
    start: int,
    ranks: Ranks,
) -> RolloutPipeline | None:
    """Where this rank's batches come from: its own engine in process, or (rank 0 alone) the
    rollout workers on Ray; None on the other ranks of a run with workers."""
    folder = model_folder(config.model)
    if config.rollout_workers == 0:
        backend = load(folder, "native", device=str(device), num_blocks=config.engine_blocks)
        ranks_pipeline = ranks
    elif ranks.main:
        options = dict(config.rollout_engine)
        if config.rollout_backend == "native":
            options.setdefault("num_blocks", config.engine_blocks)
        backend = WorkerPool(
            folder,
            config.rollout_workers,
            config.ray_address,
            device.type,
            config.rollout_backend,
            options,
        )
        ranks_pipeline = ONE_PROCESS
        if device.type == "cpu" and config.ray_address is None:
            # The workers of a local Ray compute on cores of this machine, one each: a trainer
            # that kept a thread on each core would fight them for every core (measured here on
            # 2 cores: rollouts ran at half speed, benchmarks/rl_throughput.py).
            threads = max(1, (os.cpu_count() or 1) - config.rollout_workers)
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)
    else:
        return None
    scores = (lambda: evaluate(backend, config)) if config.eval_dataset and ranks.main else None
    return RolloutPipeline(backend, tokenizer, draw, config, start, ranks_pipeline, scores)


def next_batch(
    pipeline: RolloutPipeline | None, config: GRPOConfig, step: int, ranks: Ranks
) -> tuple[Rollout, dict[str, float]]:
    """This rank's share of step `step`'s batch and the log entries about the whole batch."""
    if config.rollout_workers == 0:
        batch = pipeline.batch(step)
        return batch, rollout_stats(batch, step, ranks)
    whole = pipeline.batch(step) if ranks.main else None
    stats = rollout_stats(whole, step) if ranks.main else None
    whole, stats = ranks.broadcast((whole, stats))
    return share_groups(whole, ranks, config.group_size), stats


def train_grpo(config: GRPOConfig) -> dict[str, Any]:
    """Train (or resume); return the final folder and the last eval."""
    ranks, device = join(config.device)
    problems = load_dataset(config.dataset)
    draw = ProblemDraw(problems, config)
    state = ranks.main_first(resume_state, config)
    start = config.out / "checkpoint" if state is not None else model_folder(config.model)
    tokenizer = AutoTokenizer.from_pretrained(start)
    model = AutoModelForCausalLM.from_pretrained(start, dtype=torch.float32).to(device)
    reference = None
    if config.loss.kl_coef > 0:
        reference = AutoModelForCausalLM.from_pretrained(
            model_folder(config.model), dtype=torch.float32
        ).to(device)
        reference.eval().requires_grad_(False)
    model = shard(model, ranks, device, config.activation_checkpointing, config.mixed_precision)
    optimizer = make_optimizer(model, config)
    step = restore(optimizer, state, optimizer_loader(model, optimizer, ranks))
    if state is not None:
        draw.success = state["success"]
    side = None  # the model trained beside the policy: the critic, or PRIME's PRM
    side_state = state.get("side") if state is not None else None
    if config.advantage == "gae":
        side = Critic(config, ranks, device, side_state, tokenizer)
    elif config.advantage == "prime":
        side = OnlinePRM(config, ranks, device, side_state)
    log = open_log(config, step) if ranks.main else None
    threads = torch.get_num_threads()  # open_pipeline may leave cores to local workers
    pipeline = open_pipeline(config, device, tokenizer, draw, step, ranks)
    try:
        last_eval = run(
            model, reference, side, optimizer, tokenizer, pipeline, log, config, step, ranks
        )
    finally:
        if pipeline is not None:
            pipeline.close()
        if torch.get_num_threads() != threads:
            # Only then: even setting the same count changes later CPU results in this process
            # (they no longer match a fresh process's, which resumed-run tests compare against).
            torch.set_num_threads(threads)
    final, weights = config.out / "final", full_weights(model, ranks)
    prm_weights = full_weights(side.side.model, ranks) if isinstance(side, OnlinePRM) else None
    if log is not None:
        log.close()
        save(model, tokenizer, final, weights=weights)
        if prm_weights is not None:
            save(
                side.side.model,
                tokenizer,
                config.out / "final_prm",
                weights=prm_weights,
                json_files={PRM_CONFIG: side.prm_config(tokenizer, config)},
            )
    leave(ranks)
    return {"final": str(final), **last_eval}


def run(
    model: PreTrainedModel,
    reference: PreTrainedModel | None,
    side: Critic | OnlinePRM | None,
    optimizer: torch.optim.Optimizer,
    tokenizer: PreTrainedTokenizerBase,
    pipeline: RolloutPipeline | None,
    log: RecordWriter | None,
    config: GRPOConfig,
    step: int,
    ranks: Ranks,
) -> dict[str, float]:
    """Steps `step`..`max_steps`: each takes its batch from `pipeline`, updates, publishes the
    new version and logs; the last evaluation."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    engine = pipeline.backend if config.rollout_workers == 0 else None
    release_memory = config.release_engine_memory
    if release_memory is None:
        release_memory = model.device.type != "cpu"
    release_memory = release_memory and engine is not None
    last_eval: dict[str, float] = {}

    def publish(version: int) -> dict[str, torch.Tensor]:
        weights = full_weights(model, ranks)
        if pipeline is not None:
            pipeline.publish(version, weights)
        return weights

    def write_evaluations(evaluations: list[dict[str, float]]) -> None:
        nonlocal last_eval
        for evaluation in evaluations:
            log.write(evaluation)
            last_eval = {k: v for k, v in evaluation.items() if k not in ("step", "eval_seconds")}

    publish(step)
    if log is not None:
        write_evaluations(pipeline.take_evaluations())
    bar = tqdm(
        total=config.max_steps,
        initial=step,
        desc=LOOP_NAMES[config.advantage],
        unit="step",
        disable=not ranks.main,
    )
    while step < config.max_steps:
        lr = set_lr(optimizer, step, config)
        started = time.perf_counter()
        batch, stats = next_batch(pipeline, config, step, ranks)
        record = {"step": step + 1, "lr": lr} | stats
        record["rollout_wait_seconds"] = time.perf_counter() - started
        if record["groups_kept"]:
            if release_memory:
                engine.release_memory()
            if side is not None:  # per-token advantages into the batch
                record |= side.advantages(batch, pad_id, config, step)
            record |= update(model, reference, optimizer, batch, pad_id, config, ranks)
            if isinstance(side, Critic):
                record |= side.update(batch, pad_id, config, step)
            if release_memory:
                engine.reclaim_memory()
        step += 1
        weights = publish(step)
        # Synchronous: an evaluation of the new version is in it (its eval_seconds are logged).
        record["step_seconds"] = time.perf_counter() - started
        bar.update()
        bar.set_postfix(reward=f"{record['reward']:.2f}", acc=f"{record['accuracy']:.2f}")
        if log is not None:
            record["weight_sync_seconds"] = pipeline.take_sync_seconds()
            if isinstance(pipeline.backend, WorkerPool):
                workers = pipeline.backend.stats()
                record["worker_tokens_per_s"] = workers["worker_tokens_per_s"]
                record["prefix_hit_rate"] = workers["prefix_hit_rate"]
            log.write(record)
            write_evaluations(pipeline.take_evaluations())
        if step % config.save_every == 0 or step == config.max_steps:
            success = pipeline.success if pipeline is not None else {}
            optimizer_saved = optimizer_state(model, optimizer, ranks)
            side_state = side.side.state() if side is not None else None
            state = trainer_state(optimizer_saved, step, config, success=success, side=side_state)
            if ranks.main:
                save(model, tokenizer, config.out / "checkpoint", state, weights)
    bar.close()
    if log is not None:
        write_evaluations(pipeline.finish())
    return last_eval
