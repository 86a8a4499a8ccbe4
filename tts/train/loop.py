"""What the training loops share: optimiser settings, the schedule, the data order, atomic
checkpoints and the loop itself, nanoGPT style.

Every `save_every` steps the loop writes `OUT/checkpoint/`: a Hugging Face folder (safetensors,
tokenizer) plus `trainer_state.pt` (optimizer, step, RNG state, config), swapped in so that a
kill at any moment leaves a whole one (`save`, `recover`). Running the same command again
resumes from it, and because the data order is a function of (seed, epoch) and the RNG state
is restored, the resumed run ends where an uninterrupted one does.
`OUT/log.jsonl` gets the loss, learning rate, gradient norm, tokens trained so far (padding
excluded), tokens/s and any eval metrics.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import orjson
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from tqdm import tqdm

from tts.data.jsonl import RecordWriter, read_records
from tts.devices import resolve_device, resolve_dtype
from tts.errors import TTSError, invalid_options
from tts.models.builtin import resolve_model

Example = TypeVar("Example")
Config = TypeVar("Config", bound="LoopConfig")


class LoopConfig(BaseModel):
    """Settings every loop has. Units: steps are optimizer steps; batch_size counts sequences."""

    model_config = ConfigDict(extra="forbid")

    out: Path = Field(description="output folder: checkpoint/, final/, log.jsonl")
    max_steps: int = Field(1000, ge=1, description="optimizer steps")
    batch_size: int = Field(16, ge=1, description="sequences per micro-batch")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    max_length: int = Field(512, ge=8, description="longer sequences are cut to this")
    lr: float = Field(1e-3, gt=0, description="peak learning rate")
    min_lr: float | None = Field(
        None, ge=0, description="learning rate at the end of the cosine; default lr / 10"
    )
    warmup_steps: int = Field(50, ge=0, description="linear warmup steps")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay")
    grad_clip: float = Field(1.0, gt=0, description="max gradient norm")
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="training precision")
    device: str | None = Field(None, description="torch device; default cuda if present")
    save_every: int = Field(100, ge=1, description="steps between checkpoints")
    log_every: int = Field(10, ge=1, description="steps between log lines")
    seed: int = Field(0, description="data order, initialisation and dropout")

    @model_validator(mode="after")
    def _lr_decays(self) -> LoopConfig:
        if self.min_lr is None:
            self.min_lr = self.lr / 10
        elif self.min_lr > self.lr:
            raise ValueError(
                f"min_lr ({self.min_lr:g}) is above lr ({self.lr:g}): the cosine would rise "
                "instead of decaying; set min_lr <= lr"
            )
        return self


def read_yaml(path: str | Path) -> dict[str, Any]:
    try:
        values = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as error:
        raise TTSError(f"cannot read {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise TTSError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(values, dict):
        raise TTSError(f"{path} should hold a mapping of settings")
    return values


def load_recipe(
    config_class: type[Config],
    path: str | Path,
    overrides: dict[str, Any],
    replaced_together: tuple[str, ...] = (),
) -> Config:
    """A config from a YAML recipe with command-line overrides on top (None means not given).
    Overriding any field of `replaced_together` drops the recipe's values of all of them."""
    values = read_yaml(path)
    given = {k: v for k, v in overrides.items() if v is not None}
    if given.keys() & set(replaced_together):
        values = {k: v for k, v in values.items() if k not in replaced_together}
    try:
        return config_class(**(values | given))
    except ValidationError as error:
        raise invalid_options(f"{config_class.__name__} recipe {path}", error) from None


def model_folder(model: str) -> Path:
    """The folder a recipe's `model` names (a Hugging Face folder, or builtin), checked to hold
    a tokenizer: every loop resolves its model here, as every other command does through
    `tts.models.builtin.resolve_model`."""
    folder = resolve_model(model)
    if not (folder / "tokenizer_config.json").is_file():
        raise TTSError(f"{model} has no tokenizer (tokenizer_config.json)")
    return folder


def lr_at(step: int, config: LoopConfig) -> float:
    """Linear warmup to lr, then cosine decay to min_lr at max_steps."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(config.max_steps - config.warmup_steps, 1)
    return config.min_lr + 0.5 * (config.lr - config.min_lr) * (1 + math.cos(math.pi * progress))


def batches(examples: list[Example], config: LoopConfig, step: int) -> list[list[Example]]:
    """The micro-batch examples of optimizer step `step`: epoch order from (seed, epoch)."""
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
    return [picked[i : i + config.batch_size] for i in range(0, per_step, config.batch_size)]


def save(
    model,
    tokenizer,
    folder: Path,
    state: dict[str, Any] | None = None,
    json_files: dict[str, Any] | None = None,
) -> None:
    """Write a Hugging Face folder (plus trainer state, plus `json_files`: name -> object) so
    that a kill at any moment leaves the previous folder or the new one whole, never neither:
    the new one is written and synced as FOLDER.partial, the previous one renamed to
    FOLDER.old, the new one renamed into place, and only then the old one removed. `recover`
    finishes or undoes an interrupted swap."""
    recover(folder)
    partial, old = swap_names(folder)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    if state is not None:
        torch.save(state, partial / "trainer_state.pt")
    for name, value in (json_files or {}).items():
        (partial / name).write_text(json.dumps(value, indent=2))
    sync(partial)
    if folder.exists():
        os.replace(folder, old)
    os.replace(partial, folder)
    sync(folder.parent)
    shutil.rmtree(old, ignore_errors=True)


def swap_names(folder: Path) -> tuple[Path, Path]:
    """Where `save` writes the new folder, and where it moves the previous one meanwhile."""
    return folder.with_name(folder.name + ".partial"), folder.with_name(folder.name + ".old")


def recover(folder: Path) -> None:
    """Leave `folder` as the last one `save` wrote whole (or absent if none was) after a kill
    inside `save`: with FOLDER.old and no FOLDER, the kill fell between the two renames, after
    FOLDER.partial was whole, so it is promoted; any other leftover is half-written or stale."""
    partial, old = swap_names(folder)
    if old.exists() and not folder.exists():
        os.replace(partial, folder)
        sync(folder.parent)
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)


def sync(folder: Path) -> None:
    """Flush `folder`'s files and entries to disk: a rename is only as durable as what it names."""
    for path in [*folder.rglob("*"), folder]:
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def resume_state(config: LoopConfig) -> dict[str, Any] | None:
    """The trainer state of `OUT/checkpoint`, if there is one made with this very config."""
    recover(config.out / "checkpoint")
    path = config.out / "checkpoint" / "trainer_state.pt"
    if not path.exists():
        return None
    state = torch.load(path, weights_only=True)
    if state["config"] != config.model_dump(mode="json"):
        raise TTSError(f"{path.parent} was made with another config; use another --out")
    return state


def make_optimizer(model: torch.nn.Module, config: LoopConfig) -> torch.optim.AdamW:
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


def open_log(config: LoopConfig, step: int) -> RecordWriter:
    """OUT/log.jsonl to append to, less the lines logged after the checkpoint at `step` (a
    resumed run logs them again). The cut log replaces the old one by a rename, so a kill here
    loses no line."""
    config.out.mkdir(parents=True, exist_ok=True)
    path = config.out / "log.jsonl"
    records = read_records(path)
    kept = [r for r in records if r["step"] <= step]
    if len(kept) < len(records):
        cut = path.with_name(path.name + ".partial")
        with cut.open("wb") as handle:
            handle.write(b"".join(orjson.dumps(r) + b"\n" for r in kept))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(cut, path)
    return RecordWriter(path)


def run_loop(
    config: LoopConfig,
    model: torch.nn.Module,
    tokenizer: Any,
    examples: list[Example],
    loss_of: Callable[[torch.nn.Module, list[Example], torch.device], tuple[torch.Tensor, int]],
    state: dict[str, Any] | None,
    name: str,
    evaluate: Callable[[torch.nn.Module], dict[str, float]] | None = None,
    eval_every: int | None = None,
) -> None:
    """Train `model` to `config.max_steps`, from `state` when resuming.

    loss_of(model, micro_batch, device) returns the micro-batch's mean loss and its token
    count; evaluate(model), called every `eval_every` steps on a saved checkpoint, returns
    metrics for the log.
    """
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    model.to(device).train()
    optimizer = make_optimizer(model, config)
    step, tokens = 0, 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        step, tokens = state["step"], state["tokens"]
    log = open_log(config, step)
    bar = tqdm(total=config.max_steps, initial=step, desc=name, unit="step")
    resumed_tokens, started = tokens, time.perf_counter()
    while step < config.max_steps:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, config)
        total = 0.0
        for micro in batches(examples, config, step):
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
            state = {
                "optimizer": optimizer.state_dict(),
                "step": step,
                "tokens": tokens,
                "rng": torch.get_rng_state(),
                "config": config.model_dump(mode="json"),
            }
            save(model, tokenizer, config.out / "checkpoint", state)
        if evaluate_now:
            model.eval()
            log.write({"step": step, **evaluate(model)})
            model.train()
    bar.close()
    log.close()
