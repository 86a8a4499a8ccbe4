"""The supervised training loop SFT and PRM training share, nanoGPT style: a fixed set of
examples in an order drawn from (seed, epoch), micro-batches with gradient accumulation,
AdamW on the warmup-then-cosine schedule, atomic checkpoints and the log.

Because the data order is a function of (seed, epoch) and the RNG state is restored with the
checkpoint (`tts.train.checkpoint`), a resumed run ends where an uninterrupted one does.
`OUT/log.jsonl` gets the loss, learning rate, gradient norm, tokens trained so far (padding
excluded), tokens/s and any eval metrics.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import torch
from pydantic import Field
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tts.devices import resolve_device, resolve_dtype
from tts.train.checkpoint import open_log, restore, save, trainer_state
from tts.train.optimizer import lr_at, make_optimizer, set_lr
from tts.train.recipe import TrainConfig

Example = TypeVar("Example")


class SupervisedConfig(TrainConfig):
    """Settings of the supervised loop (`run_loop`), beside those every loop reads."""

    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    max_length: int = Field(512, ge=8, description="longer sequences are cut to this")
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="training precision")
    log_every: int = Field(10, ge=1, description="steps between log lines")


def batches(
    examples: list[Example],
    config: SupervisedConfig,
    step: int,
    length: Callable[[Example], int] | None = None,
) -> list[list[Example]]:
    """The micro-batch examples of optimizer step `step`: epoch order from (seed, epoch). Given
    `length`, the step's examples are split into micro-batches in order of length, so each is
    padded only to lengths near its own: the step trains on the same examples (each micro-batch
    is still a mean over its tokens), and on data whose lengths spread over 10x, as search
    streams do, several times faster."""
    per_step = config.batch_size * config.grad_accum
    start = step * per_step
    epoch, offset = divmod(start, len(examples))
    order = list(range(len(examples)))
    random.Random(config.seed * 100_003 + epoch).shuffle(order)
    picked = []
    while len(picked) < per_step:
        if offset == len(order):
            epoch, offset = epoch + 1, 0
            random.Random(config.seed * 100_003 + epoch).shuffle(order)
        picked.append(examples[order[offset]])
        offset += 1
    if length is not None:
        picked.sort(key=length)
    return [picked[i : i + config.batch_size] for i in range(0, per_step, config.batch_size)]


def run_loop(
    config: SupervisedConfig,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[Example],
    loss_of: Callable[[torch.nn.Module, list[Example], torch.device], tuple[torch.Tensor, int]],
    state: dict[str, Any] | None,
    name: str,
    evaluate: Callable[[torch.nn.Module], dict[str, float]] | None = None,
    eval_every: int | None = None,
    length: Callable[[Example], int] | None = None,
) -> None:
    """Train `model` to `config.max_steps`, from `state` when resuming.

    loss_of(model, micro_batch, device) returns the micro-batch's mean loss and its token
    count; evaluate(model), called every `eval_every` steps on a saved checkpoint, returns
    metrics for the log; `length`, if given, sorts each step's micro-batches (`batches`).
    """
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    model.to(device).train()
    optimizer = make_optimizer(model, config)
    step = restore(optimizer, state)
    tokens = state["tokens"] if state is not None else 0
    log = open_log(config, step)
    bar = tqdm(total=config.max_steps, initial=step, desc=name, unit="step")
    resumed_tokens, started = tokens, time.perf_counter()
    while step < config.max_steps:
        set_lr(optimizer, step, config)
        total = 0.0
        for micro in batches(examples, config, step, length):
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                loss, count = loss_of(model, micro, device)
            (loss / config.grad_accum).backward()
            total += loss.item() / config.grad_accum
            tokens += count
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        bar.update()
        bar.set_postfix(loss=f"{total:.3f}")
        if step % config.log_every == 0 or step == config.max_steps:
            rate = (tokens - resumed_tokens) / (time.perf_counter() - started)
            log.write(
                {
                    "step": step,
                    "loss": total,
                    "lr": lr_at(step - 1, config),
                    "grad_norm": float(norm),
                    "tokens": tokens,
                    "tokens_per_s": rate,
                }
            )
        evaluate_now = evaluate is not None and eval_every is not None and step % eval_every == 0
        if step % config.save_every == 0 or step == config.max_steps or evaluate_now:
            state = trainer_state(optimizer, step, config, tokens=tokens)
            save(model, tokenizer, config.out / "checkpoint", state)
        if evaluate_now:
            model.eval()
            log.write({"step": step, **evaluate(model)})
            model.train()
    bar.close()
    log.close()
