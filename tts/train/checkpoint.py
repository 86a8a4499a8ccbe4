"""Atomic checkpoints, resuming from them, and the training log cut back to them.

Every `save_every` steps a loop writes `OUT/checkpoint/`: a Hugging Face folder (safetensors,
tokenizer) plus `trainer_state.pt` (optimizer, step, RNG state, config, and what the loop adds),
swapped in so that a kill at any moment leaves a whole one (`save`, `recover`). Running the
same command again resumes from it (`resume_state`, `restore`), and `open_log` drops the log
lines written after it, which the resumed run writes again.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tts.data.jsonl import RecordWriter, read_records
from tts.errors import TTSError
from tts.train.recipe import TrainConfig


def save(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    folder: Path,
    state: dict[str, Any] | None = None,
    weights: dict[str, torch.Tensor] | None = None,
    json_files: dict[str, Any] | None = None,
) -> None:
    """Write a Hugging Face folder (of `weights`, by default the model's own state dict; a
    sharded model's are gathered first) plus trainer state, plus `json_files`: name -> object, so
    that a kill at any moment leaves the previous folder or the new one whole, never neither:
    the new one is written and synced as FOLDER.partial, the previous one renamed to
    FOLDER.old, the new one renamed into place, and only then the old one removed. `recover`
    finishes or undoes an interrupted swap."""
    recover(folder)
    partial, old = swap_names(folder)
    model.save_pretrained(partial, state_dict=weights)
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


def trainer_state(
    optimizer: torch.optim.Optimizer | dict[str, Any],
    step: int,
    config: TrainConfig,
    **extra: Any,
) -> dict[str, Any]:
    """What `trainer_state.pt` holds after optimizer step `step`: the optimizer's state (or the
    state itself, as a sharded loop gathers it), the step, the RNG state, the config (a resume
    checks it) and the loop's own `extra` entries."""
    return {
        "optimizer": optimizer if isinstance(optimizer, dict) else optimizer.state_dict(),
        "step": step,
        "rng": torch.get_rng_state(),
        "config": config.model_dump(mode="json"),
        **extra,
    }


def resume_state(config: TrainConfig) -> dict[str, Any] | None:
    """The trainer state of `OUT/checkpoint`, if there is one made with this very config."""
    recover(config.out / "checkpoint")
    path = config.out / "checkpoint" / "trainer_state.pt"
    if not path.exists():
        return None
    state = torch.load(path, weights_only=True)
    if state["config"] != config.model_dump(mode="json"):
        raise TTSError(f"{path.parent} was made with another config; use another --out")
    return state


def restore(
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any] | None,
    load_optimizer: Callable[[dict[str, Any]], None] | None = None,
) -> int:
    """Put back the optimizer (by `load_optimizer`, as a sharded loop loads it, else its own
    `load_state_dict`) and RNG state of a `resume_state` (none: a fresh start); the number of
    optimizer steps already taken."""
    if state is None:
        return 0
    (load_optimizer or optimizer.load_state_dict)(state["optimizer"])
    torch.set_rng_state(state["rng"])
    return state["step"]


def open_log(config: TrainConfig, step: int) -> RecordWriter:
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
