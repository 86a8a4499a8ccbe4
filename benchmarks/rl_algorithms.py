"""The RL stage's algorithms against each other on the built-in model.

    python benchmarks/rl_algorithms.py methods [--steps 30] [--seeds 0,1]
    python benchmarks/rl_algorithms.py long2short      # after methods: starts from its GRPO run
    python benchmarks/rl_algorithms.py star

`methods`: where advantages come from, at equal rollout samples. GRPO (group-relative), PPO with a
critic on the outcome reward, PPO with the outcome and the built-in PRM's process rewards, and
PRIME (online implicit PRM; with the recipe's PRIME beta 0.05 at 1e-5, and with the built-in PRM's
beta 0.5 at 1e-4, where the PRM learns faster), each the recipe under configs/recipes/ cut to
`--steps` steps (the same problems, samples per step, learning rate and schedule for all), trained
by the CLI in a process of its own, once per seed. The held-out pass@1 over training is each run's
own evaluation (`eval_every`; the recipe's eval set, `eval_samples` samples of each problem, seeded
by the run's seed, the same at every evaluation), so step 0 is the start model's and the gain of a
run is its last evaluation less its first. The spread of a method's gains over the seeds is the
run-to-run spread.

`long2short`: Kimi k1.5's long2short on the GRPO model of `methods` (seed 0): `tts data pairs`
on 500 training problems (8 samples each; the shortest correct answer over the longest other
one, longer-correct or wrong), `tts train dpo` with configs/recipes/dpo.yaml, then the mean
tokens per answer and pass@1 of the GRPO model and the DPO model on the eval set (GRPO's
evaluation: 8 samples of each of 100 problems, the same seeds for both).

`star`: configs/recipes/star.yaml (3 iterations) with and without rationalisation; pass@1
after each iteration (iteration 0 is the base model), GRPO's evaluation at seed 0.

A finished run is reused and a stopped one resumes from its checkpoint. Each part prints a
table and writes its keys into benchmarks/results/rl_algorithms.json (the keys of the other
parts are kept); `methods` draws benchmarks/results/rl_algorithms.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np
import yaml

from tts.data.datasets import load_dataset
from tts.data.jsonl import read_records
from tts.engine import load
from tts.prompts import build_prompt
from tts.train.grpo import load_config
from tts.verifiers import extract_answer, is_correct

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

RECIPES = Path("configs/recipes")
METHODS = {  # name -> (command, recipe, fields removed, fields set, run folder, result key)
    "GRPO": ("grpo", "grpo.yaml", (), {}, "grpo", "grpo_gain"),
    "PPO, outcome": ("ppo", "ppo.yaml", ("process_reward",), {}, "ppo_outcome", "ppo_outcome_gain"),
    "PPO, outcome + process": ("ppo", "ppo.yaml", (), {}, "ppo", "ppo_process_gain"),
    "PRIME": ("prime", "prime.yaml", (), {}, "prime", "prime_gain"),
    "PRIME, beta 0.5 at 1e-4": (
        "prime",
        "prime.yaml",
        (),
        {"prime": {"beta": 0.5, "lr": 1e-4, "process_weight": 1.0}},
        "prime_strong",
        "prime_strong_prm_gain",
    ),
}


def cli(*arguments: str, log: Path) -> None:
    """`tts ARGUMENTS` in a process of its own, its output appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as output:
        env = {**os.environ, "TQDM_DISABLE": "1"}
        command = [sys.executable, "-m", "tts.cli", *arguments]
        subprocess.run(command, env=env, stdout=output, stderr=subprocess.STDOUT, check=True)


def train(command: str, recipe: dict, out: Path) -> None:
    """Train (or resume) `recipe` into `out` with `tts train COMMAND`, unless it finished."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe | {"out": str(out)}))
    if (out / "final" / "model.safetensors").exists():
        return
    cli("train", command, "--recipe", str(path), log=out / "output.txt")


def evaluations(out: Path) -> list[tuple[int, float]]:
    """(step, pass@1) of each evaluation in a run's log."""
    return [
        (r["step"], r["eval_pass@1"]) for r in read_records(out / "log.jsonl") if "eval_pass@1" in r
    ]


def methods(args: argparse.Namespace) -> dict:
    seeds = [int(seed) for seed in args.seeds.split(",")]
    runs: dict[str, dict] = {}
    for name, (command, recipe_file, removed, fields, folder, _) in METHODS.items():
        for seed in seeds:
            recipe = yaml.safe_load((RECIPES / recipe_file).read_text())
            recipe = {k: v for k, v in recipe.items() if k not in removed} | fields
            recipe |= {"max_steps": args.steps, "eval_every": args.eval_every, "seed": seed}
            out = args.runs / f"{folder}_seed{seed}"
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


def answers(model: Path) -> tuple[float, float]:
    """pass@1 and mean completion tokens of `model` on GRPO's evaluation (its recipe's eval
    set, samples and seeds at seed 0)."""
    config = load_config(RECIPES / "grpo.yaml", seed=0)
    backend = load(model, "native", device="cpu")
    problems = load_dataset(config.eval_dataset, config.eval_limit)

    async def one(problem) -> list[tuple[bool, int]]:
        prompt = build_prompt(backend.tokenizer, problem.problem, config.instruction)
        params = config.sampling_params(config.eval_samples, "eval", problem.id)
        completions = await backend.generate(prompt, params)
        return [
            (is_correct(extract_answer(c.text), problem.answer), len(c.token_ids))
            for c in completions
        ]

    async def every() -> list[list[tuple[bool, int]]]:
        return await asyncio.gather(*(one(problem) for problem in problems))

    rows = asyncio.run(every())
    pass1 = float(np.mean([np.mean([ok for ok, _ in row]) for row in rows]))
    return pass1, float(np.mean([n for row in rows for _, n in row]))


def long2short(args: argparse.Namespace) -> dict:
    start = args.runs / "grpo_seed0" / "final"
    if not (start / "model.safetensors").exists():
        raise SystemExit(f"{start} is missing: run the methods part first")
    folder = args.runs / "long2short"
    pairs = folder / "pairs.jsonl"
    cli(
        "data", "pairs", "--model", str(start), "--dataset", "synth:arith:3:2000:train",
        "--limit", "500", "--n", "8", "--temperature", "1.0", "--max-tokens", "256",
        "--out", str(pairs), log=folder / "output.txt",
    )  # fmt: skip
    out = folder / "dpo"
    if not (out / "final" / "model.safetensors").exists():
        cli(
            "train", "dpo", "--recipe", str(RECIPES / "dpo.yaml"), "--model", str(start),
            "--data", str(pairs), "--out", str(out), log=folder / "output.txt",
        )  # fmt: skip
    before_pass, before_tokens = answers(start)
    after_pass, after_tokens = answers(out / "final")
    record = {
        "long2short_pairs": len(read_records(pairs)),
        "long2short_tokens_before": before_tokens,
        "long2short_tokens_after": after_tokens,
        "long2short_token_ratio": after_tokens / before_tokens,
        "long2short_pass1_before": before_pass,
        "long2short_pass1_after": after_pass,
        "long2short_pass1_delta": after_pass - before_pass,
    }
    print(f"{'model':<8} {'pass@1':>7} {'tokens':>7}")
    print(f"{'GRPO':<8} {before_pass:>7.4f} {before_tokens:>7.1f}")
    print(f"{'+ DPO':<8} {after_pass:>7.4f} {after_tokens:>7.1f}")
    return record


def star(args: argparse.Namespace) -> dict:
    record = {}
    for key, rationalize in (("star", True), ("star_plain", False)):
        out = args.runs / key
        flag = "--rationalize" if rationalize else "--no-rationalize"
        recipe = str(RECIPES / "star.yaml")
        cli("train", "star", "--recipe", recipe, "--out", str(out), flag, log=out / "output.txt")
        log = {r["step"]: r for r in read_records(out / "log.jsonl")}
        steps = sorted(log)
        record[f"{key}_pass1_by_iteration"] = [log[i]["eval_pass@1"] for i in steps]
        record[f"{key}_examples_by_iteration"] = [log[i].get("examples", 0) for i in steps[1:]]
        record[f"{key}_rationalized_by_iteration"] = [
            log[i].get("rationalized", 0) for i in steps[1:]
        ]
    print(f"{'STaR':<24} pass@1 by iteration (0: base)")
    for key in ("star", "star_plain"):
        values = " ".join(f"{v:.4f}" for v in record[f"{key}_pass1_by_iteration"])
        print(f"{key:<24} {values}")
    return record


PARTS = {"methods": methods, "long2short": long2short, "star": star}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=sorted(PARTS))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--runs", type=Path, default=Path("runs/rl_algorithms"))
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    args.results.mkdir(parents=True, exist_ok=True)
    record = PARTS[args.part](args)
    path = args.results / "rl_algorithms.json"
    kept = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps(kept | record, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
