"""GRPO: reinforcement learning with verifiable rewards, rolled out by the native engine in
process. This module is the loop; each part of a step has its own module.

One step (Shao et al., 2024, "DeepSeekMath", Sec. 4.1; the DeepSeek-R1 recipe):

1. draw `prompts_per_step` training problems (`tts.train.draw`: uniformly, by a curriculum
   from easy to hard, or by failure rate);
2. the native engine samples `group_size` completions of each with the current weights, rule
   rewards score them and advantages are group-relative (`tts.train.rollout`; with dynamic
   sampling, groups whose rewards are all equal are dropped and more problems drawn);
3. `epochs` passes of the policy loss over the rollouts in micro-batches, one optimizer step
   per pass (`tts.train.policy_update`; the loss variants are `tts.train.policy_loss`'s table);
4. the trainer's weights go into the engine (`NativeBackend.update_weights`: no reload from
   disk), which also forgets its prefix cache.

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

from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer

from tts.data.datasets import load_dataset
from tts.engine import Backend, load
from tts.train.checkpoint import open_log, restore, resume_state, save, trainer_state
from tts.train.distributed import (
    full_weights,
    join,
    leave,
    optimizer_loader,
    optimizer_state,
    shard,
)
from tts.train.draw import ProblemDraw
from tts.train.evaluate import pass_at_1
from tts.train.grpo_config import GRPOConfig
from tts.train.optimizer import make_optimizer, set_lr
from tts.train.policy_update import update
from tts.train.recipe import load_recipe, model_folder
from tts.train.rollout import rollout, rollout_stats


def load_config(path: str | Path, **overrides: object) -> GRPOConfig:
    """A GRPOConfig from a YAML recipe, with command-line overrides on top."""
    return load_recipe(GRPOConfig, path, overrides)


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


def train_grpo(config: GRPOConfig) -> dict[str, Any]:
    """Train (or resume); return the final folder and the last eval."""
    ranks, device = join(config.device)
    problems = load_dataset(config.dataset)
    draw = ProblemDraw(problems, config)
    state = ranks.main_first(resume_state, config)
    start = config.out / "checkpoint" if state is not None else model_folder(config.model)
    tokenizer = AutoTokenizer.from_pretrained(start)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    model = AutoModelForCausalLM.from_pretrained(start, dtype=torch.float32).to(device)
    reference = None
    if config.loss.kl_coef > 0:
        reference = AutoModelForCausalLM.from_pretrained(
            model_folder(config.model), dtype=torch.float32
        ).to(device)
        reference.eval().requires_grad_(False)
    model = shard(model, ranks, device, config.activation_checkpointing, config.mixed_precision)
    backend = load(
        model_folder(config.model), "native", device=str(device), num_blocks=config.engine_blocks
    )
    backend.update_weights(full_weights(model, ranks).items())
    release_memory = config.release_engine_memory
    if release_memory is None:
        release_memory = device.type != "cpu"
    optimizer = make_optimizer(model, config)
    step = restore(optimizer, state, optimizer_loader(model, optimizer, ranks))
    if state is not None:
        draw.success = state["success"]
    log = open_log(config, step) if ranks.main else None
    last_eval: dict[str, float] = {}
    if step == 0 and config.eval_dataset and log is not None:
        last_eval = evaluate(backend, config)
        log.write({"step": 0, **last_eval})
    bar = tqdm(
        total=config.max_steps, initial=step, desc="grpo", unit="step", disable=not ranks.main
    )
    while step < config.max_steps:
        lr = set_lr(optimizer, step, config)
        batch = rollout(backend, tokenizer, draw, config, step, ranks)
        record = {"step": step + 1, "lr": lr} | rollout_stats(batch, ranks)
        if record["groups_kept"]:
            if release_memory:
                backend.release_memory()
            record |= update(model, reference, optimizer, batch, pad_id, config, ranks)
            backend.update_weights(full_weights(model, ranks).items())
            if release_memory:
                backend.reclaim_memory()
        step += 1
        bar.update()
        bar.set_postfix(reward=f"{record['reward']:.2f}", acc=f"{record['accuracy']:.2f}")
        evaluate_now = config.eval_dataset and (
            step % config.eval_every == 0 or step == config.max_steps
        )
        if log is not None:
            log.write(record)
            if evaluate_now:
                last_eval = evaluate(backend, config)
                log.write({"step": step, **last_eval})
        if step % config.save_every == 0 or step == config.max_steps:
            weights = full_weights(model, ranks)
            state = trainer_state(
                optimizer_state(model, optimizer, ranks), step, config, success=draw.success
            )
            if ranks.main:
                save(model, tokenizer, config.out / "checkpoint", state, weights)
    bar.close()
    final, weights = config.out / "final", full_weights(model, ranks)
    if log is not None:
        log.close()
        save(model, tokenizer, final, weights=weights)
    leave(ranks)
    return {"final": str(final), **last_eval}
