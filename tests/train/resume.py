"""Killing a training run in a subprocess once it has checkpointed, and comparing weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file


def kill_after_a_checkpoint(module: str, train: str, recipe: Path, out: Path) -> int:
    """Run `module.train(module.load_config(recipe))` in a subprocess, SIGKILL it as soon as
    `out/checkpoint` exists, and return the step that checkpoint holds."""
    code = (
        f"from {module} import load_config, {train}; import sys; {train}(load_config(sys.argv[1]))"
    )
    victim = subprocess.Popen(
        [sys.executable, "-c", code, str(recipe)],
        env={**os.environ, "TQDM_DISABLE": "1"},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    state = out / "checkpoint" / "trainer_state.pt"
    deadline = time.monotonic() + 120
    while not state.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    return torch.load(state, weights_only=True)["step"]


def assert_same_weights(a: Path, b: Path) -> None:
    """The two model folders hold the same tensors (to float32 rounding)."""
    first, second = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.allclose(first[k], second[k], atol=1e-6) for k in first)


def training_log(folder: Path) -> list[dict]:
    """The lines of a run's log (`folder/out/log.jsonl`, as the tests' recipes place it)."""
    return [json.loads(line) for line in (folder / "out" / "log.jsonl").read_text().splitlines()]


class Killed(BaseException):
    """The process dies here: a BaseException, so no `except Exception` in the code under test
    can catch it and run cleanup a killed process would never run."""


def die_at(monkeypatch, n: int, steps: list[tuple[object, str]]) -> None:
    """From now on, the n-th call to any of `steps` ((module, function name) pairs, e.g. the
    renames, removals and syncs of a checkpoint swap) raises `Killed` instead of running, which
    leaves the files as a kill at that moment would. `monkeypatch.undo()` disarms it."""
    calls = 0
    for module, name in steps:
        real = getattr(module, name)

        def step(*args, real=real, **kwargs):
            nonlocal calls
            calls += 1
            if calls == n:
                raise Killed
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, step)


def grpo_recipe(folder: Path, **overrides: object) -> Path:
    """A short GRPO recipe on the built-in model in `folder`, written to FOLDER/recipe.yaml."""
    values = {
        "out": str(folder / "out"),
        "dataset": "synth:arith:2:40:train",
        "prompts_per_step": 4,
        "group_size": 4,
        "max_tokens": 96,
        "max_steps": 4,
        "batch_size": 8,
        "lr": 1e-4,
        "warmup_steps": 1,
        "save_every": 2,
        "eval_dataset": "synth:arith:2:8",
        "eval_samples": 2,
        "eval_every": 2,
    }
    return write_recipe(folder, values | overrides)


def write_recipe(folder: Path, values: dict) -> Path:
    """`values` as FOLDER/recipe.yaml."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def train_by_cli(recipe: Path) -> None:
    """`tts train grpo --recipe RECIPE` in a process of its own, with one thread: beside a
    local worker the trainer computes on the cores the workers leave (here one), a CPU matmul's
    rounding depends on its thread count, and changing that count inside this process would
    change the rounding of the tests after it."""
    command = [sys.executable, "-m", "tts.cli", "train", "grpo", "--recipe", str(recipe)]
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
