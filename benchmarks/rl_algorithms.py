"""The RL stage's algorithms against each other on the built-in model: where advantages come
from, at equal rollout samples.

    python benchmarks/rl_algorithms.py methods [--steps 30] [--seeds 0,1]

`methods`: GRPO (group-relative), PPO with a critic on the outcome reward, PPO with the outcome
and the built-in PRM's process rewards, and PRIME (online implicit PRM), each the recipe under
configs/recipes/ cut to `--steps` steps (the same problems, samples per step, learning rate
and schedule for all four), trained by the CLI in a process of its own, once per seed. The
held-out pass@1 over training is each run's own evaluation (`eval_every`; the recipe's eval
set, `eval_samples` samples of each problem, the same seeds at every evaluation and for every
run), so step 0 is the start model's and the gain of a run is its last evaluation less its
first. The spread of a method's gains over the seeds is the run-to-run spread.

Runs go in turn (each method for every seed, then the next method). A finished run is reused and
a stopped one resumes from its checkpoint. Prints a table, draws
benchmarks/results/rl_algorithms.png and writes benchmarks/results/rl_algorithms.json (the keys
of this part; the keys the file holds from other parts are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np
import yaml

from tts.data.jsonl import read_records

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

RECIPES = Path("configs/recipes")
METHODS = {  # name -> (command, recipe, fields removed from it, result key)
    "GRPO": ("grpo", "grpo.yaml", (), "grpo_gain"),
    "PPO, outcome": ("ppo", "ppo.yaml", ("process_reward",), "ppo_outcome_gain"),
    "PPO, outcome + process": ("ppo", "ppo.yaml", (), "ppo_process_gain"),
    "PRIME": ("prime", "prime.yaml", (), "prime_gain"),
}


def train(command: str, recipe: dict, out: Path) -> None:
    """Train (or resume) `recipe` into `out` with `tts train COMMAND`, unless it finished."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe | {"out": str(out)}))
    if (out / "final" / "model.safetensors").exists():
        return
    cli = [sys.executable, "-m", "tts.cli", "train", command, "--recipe", str(path)]
    with (out / "output.txt").open("ab") as output:
        env = {**os.environ, "TQDM_DISABLE": "1"}
        subprocess.run(cli, env=env, stdout=output, stderr=subprocess.STDOUT, check=True)


def evaluations(out: Path) -> list[tuple[int, float]]:
    """(step, pass@1) of each evaluation in a run's log."""
    return [
        (r["step"], r["eval_pass@1"]) for r in read_records(out / "log.jsonl") if "eval_pass@1" in r
    ]


def methods(args: argparse.Namespace) -> dict:
    seeds = [int(seed) for seed in args.seeds.split(",")]
    runs: dict[str, dict] = {}
    for name, (command, recipe_file, removed, _) in METHODS.items():
        for seed in seeds:
            recipe = yaml.safe_load((RECIPES / recipe_file).read_text())
            recipe = {k: v for k, v in recipe.items() if k not in removed}
            recipe |= {"max_steps": args.steps, "eval_every": args.eval_every, "seed": seed}
            out = args.runs / f"{command}{'_outcome' if removed else ''}_seed{seed}"
            print(f"training {name}, seed {seed} -> {out}", flush=True)
            train(command, recipe, out)
            curve = evaluations(out)
            steps = [r for r in read_records(out / "log.jsonl") if "reward" in r]
            runs[f"{name} seed {seed}"] = {
                "method": name,
                "seed": seed,
                "out": str(out),
                "pass1_by_step": curve,
                "gain": curve[-1][1] - curve[0][1],
                "seconds_per_step": float(np.mean([r["step_seconds"] for r in steps])),
                "samples": sum(r["groups_kept"] for r in steps) * recipe["group_size"],
            }
    record = {"methods_steps": args.steps, "methods_seeds": seeds, "methods_runs": runs}
    for name, (*_, key) in METHODS.items():
        gains = [run["gain"] for run in runs.values() if run["method"] == name]
        record[key] = float(np.mean(gains))
        record[f"{key}_spread"] = float(max(gains) - min(gains))
    draw(runs, args.results / "rl_algorithms.png")
    print(f"{'method':<24} {'gain (mean)':>11} {'spread':>7} {'s/step':>7}")
    for name, (*_, key) in METHODS.items():
        seconds = np.mean([r["seconds_per_step"] for r in runs.values() if r["method"] == name])
        print(f"{name:<24} {record[key]:>11.4f} {record[key + '_spread']:>7.4f} {seconds:>7.1f}")
    return record


def draw(runs: dict[str, dict], path: Path) -> None:
    """Held-out pass@1 against training step, each method's mean over seeds and its range."""
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for name in METHODS:
        curves = [run["pass1_by_step"] for run in runs.values() if run["method"] == name]
        steps = [step for step, _ in curves[0]]
        values = np.array([[value for _, value in curve] for curve in curves])
        (line,) = axes.plot(steps, values.mean(axis=0), marker="o", label=name)
        axes.fill_between(
            steps, values.min(axis=0), values.max(axis=0), alpha=0.15, color=line.get_color()
        )
    axes.set_xlabel("training step (same rollout samples per step for every method)")
    axes.set_ylabel("held-out pass@1")
    axes.set_title("Built-in model, synth:arith:3: mean over seeds, band = range")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=["methods"])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--runs", type=Path, default=Path("runs/rl_algorithms"))
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    args.results.mkdir(parents=True, exist_ok=True)
    record = methods(args)
    path = args.results / "rl_algorithms.json"
    kept = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps(kept | record, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
