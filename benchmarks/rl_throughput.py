"""Asynchronous GRPO against synchronous on this machine: steps per minute, where the time goes,
and held-out pass@1 after the same number of samples.

    python benchmarks/rl_throughput.py [--steps 30] [--seeds 0,1] [--recipe R]

Every run is the built-in GRPO recipe cut to `--steps` steps, trained by the CLI in a process of
its own (`tts train grpo`) with no evaluation during training:

- sync: one process, the engine in it (the default placement), once per seed: the spread of
  their pass@1 is the run-to-run spread;
- async eta=1 and eta=2: the trainer and one Ray rollout worker (one core), `max_staleness` 1
  or 2, once per seed.

Runs go in turn (sync, eta=1, eta=2 for one seed, then the next seed), so drift in the machine's
speed falls on all of them. Time per step comes from each run's log (`step_seconds`: from asking
for the batch to the new weights published; start-up, Ray's included, is not in it), split into
waiting for rollouts, the update and the weight sync. pass@1 of each final model: the recipe's
eval set, `eval_samples` samples of each of `eval_limit` problems, the same seeds for every
model (`tts.train.grpo.evaluate`). A finished run is reused and a stopped one resumes (its
timings then cover the steps run after the resume). Prints a table and writes
benchmarks/results/rl_throughput.json; the headline keys are for eta=1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml
from safetensors.torch import load_file

from tts.data.jsonl import read_records
from tts.engine import load
from tts.train.grpo import evaluate, load_config
from tts.train.recipe import model_folder

PLACEMENTS = {  # name -> recipe fields
    "sync": {},
    "async eta=1": {"rollout_workers": 1, "max_staleness": 1},
    "async eta=2": {"rollout_workers": 1, "max_staleness": 2},
}


def train(recipe: Path, fields: dict, out: Path) -> None:
    """Train (or resume) the recipe with `fields` on top into `out`, through the CLI."""
    out.mkdir(parents=True, exist_ok=True)
    values = yaml.safe_load(recipe.read_text()) | fields | {"out": str(out)}
    path = out / "recipe.yaml"
    path.write_text(yaml.safe_dump(values))
    if (out / "final" / "model.safetensors").exists():
        return
    command = [sys.executable, "-m", "tts.cli", "train", "grpo", "--recipe", str(path)]
    with (out / "output.txt").open("ab") as output:
        env = {**os.environ, "TQDM_DISABLE": "1"}
        subprocess.run(command, env=env, stdout=output, stderr=subprocess.STDOUT, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", type=Path, default=Path("configs/recipes/grpo.yaml"))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--runs", type=Path, default=Path("runs/rl_throughput"))
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    recipe = yaml.safe_load(args.recipe.read_text())
    eval_dataset = recipe.get("eval_dataset")
    if not eval_dataset:
        parser.error(f"{args.recipe} has no eval_dataset to score on")
    seeds = [int(seed) for seed in args.seeds.split(",")]
    runs: dict[str, dict] = {}
    for seed in seeds:
        for name, fields in PLACEMENTS.items():
            out = args.runs / f"{name.replace(' ', '_').replace('=', '')}_seed{seed}"
            fields = fields | {"max_steps": args.steps, "seed": seed, "eval_dataset": None}
            fields |= {"save_every": args.steps}
            print(f"training {name}, seed {seed} -> {out}", flush=True)
            train(args.recipe, fields, out)
            runs[f"{name} seed {seed}"] = {"placement": name, "seed": seed, "out": str(out)}
    for key, run in runs.items():
        run |= timings(Path(run["out"]))
        run["pass1"] = pass_at_1(Path(run["out"]), eval_dataset)
        print(f"{key}: {run['steps_per_min']:.2f} steps/min, pass@1 {run['pass1']:.4f}", flush=True)
    record = summary(runs, recipe, args)
    record["start_pass1"] = pass_at_1(args.recipe, eval_dataset, start=True)
    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / "rl_throughput.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print_table(runs)
    headline = ["sync_steps_per_min", "async_steps_per_min", "async_speedup", "sync_pass1"]
    headline += ["async_pass1", "pass1_spread", "start_pass1", "weight_sync_seconds"]
    print(json.dumps({key: record[key] for key in headline}, indent=2))
    print(f"wrote {path}")


def timings(out: Path) -> dict:
    """Means per step from the run's log: seconds in all, waiting for rollouts, in the update
    and the weight sync, and the workers' rates."""
    steps = [r for r in read_records(out / "log.jsonl") if "reward" in r]
    seconds = [r["step_seconds"] for r in steps]
    wait = [r["rollout_wait_seconds"] for r in steps]
    sync = [r["weight_sync_seconds"] for r in steps]
    result = {
        "steps": len(steps),
        "steps_per_min": 60 * len(steps) / sum(seconds),
        "step_seconds": float(np.mean(seconds)),
        "rollout_wait_seconds": float(np.mean(wait)),
        "weight_sync_seconds": float(np.mean(sync)),
        "update_seconds": float(np.mean(np.array(seconds) - np.array(wait) - np.array(sync))),
        "staleness_max": max(r["staleness_max"] for r in steps),
        "reward_mean": float(np.mean([r["reward"] for r in steps])),
    }
    if "worker_tokens_per_s" in steps[-1]:
        result["worker_tokens_per_s"] = steps[-1]["worker_tokens_per_s"]
    else:
        result["rollout_tokens_per_s"] = float(np.mean([r["rollout_tokens_per_s"] for r in steps]))
    return result


def pass_at_1(path: Path, eval_dataset: str, start: bool = False) -> float:
    """pass@1 on the recipe's eval set, the same seeds for every model: of the final model of
    the run in folder `path`, or with `start`, of the model the recipe at `path` starts from."""
    recipe = path if start else path / "recipe.yaml"
    config = load_config(recipe, eval_dataset=eval_dataset, seed=0)
    model = model_folder(config.model) if start else path / "final"
    return evaluate(load(model, "native", device="cpu"), config)["eval_pass@1"]


def summary(runs: dict[str, dict], recipe: dict, args: argparse.Namespace) -> dict:
    def mean(placement: str, key: str) -> float:
        return float(np.mean([r[key] for r in runs.values() if r["placement"] == placement]))

    sync_pass = [r["pass1"] for r in runs.values() if r["placement"] == "sync"]
    weights = load_file(Path(next(iter(runs.values()))["out"]) / "final" / "model.safetensors")
    weight_bytes = sum(t.numel() * t.element_size() for t in weights.values())
    sync_seconds = mean("async eta=1", "weight_sync_seconds")
    return {
        "recipe": str(args.recipe),
        "steps": args.steps,
        "samples_per_step": recipe["prompts_per_step"] * recipe["group_size"],
        "cpu_cores": os.cpu_count(),
        "sync_steps_per_min": mean("sync", "steps_per_min"),
        "async_steps_per_min": mean("async eta=1", "steps_per_min"),
        "async_speedup": mean("async eta=1", "steps_per_min") / mean("sync", "steps_per_min"),
        "async_eta2_steps_per_min": mean("async eta=2", "steps_per_min"),
        "async_eta2_speedup": mean("async eta=2", "steps_per_min") / mean("sync", "steps_per_min"),
        "sync_pass1": mean("sync", "pass1"),
        "async_pass1": mean("async eta=1", "pass1"),
        "async_eta2_pass1": mean("async eta=2", "pass1"),
        "pass1_spread": max(sync_pass) - min(sync_pass),
        "weight_sync_seconds": sync_seconds,
        "weight_bytes": weight_bytes,
        "weight_sync_seconds_per_gib": sync_seconds / (weight_bytes / 2**30),
        "runs": runs,
    }


def print_table(runs: dict[str, dict]) -> None:
    print(
        f"{'run':<20} {'steps/min':>9} {'s/step':>7} {'wait':>6} {'update':>7} {'sync':>6}"
        f" {'pass@1':>7}"
    )
    for key, run in runs.items():
        print(
            f"{key:<20} {run['steps_per_min']:>9.2f} {run['step_seconds']:>7.2f}"
            f" {run['rollout_wait_seconds']:>6.2f} {run['update_seconds']:>7.2f}"
            f" {run['weight_sync_seconds']:>6.3f} {run['pass1']:>7.4f}"
        )


if __name__ == "__main__":
    main()
