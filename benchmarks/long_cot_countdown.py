"""Long chain-of-thought where search pays: the findings of Yeo et al. (2025), "Demystifying
Long Chain-of-Thought Reasoning in LLMs", tested on countdown search streams (Gandhi et al.,
2024, "Stream of Search"), at the scale of a 2-core CPU.

    python benchmarks/long_cot_countdown.py sft [--budgets 1000000,3000000,10000000]
    python benchmarks/long_cot_countdown.py grpo
    python benchmarks/long_cot_countdown.py length

`sft` (experiment 1, SFT scaling): from scratch, the built-in model's architecture, on countdown
difficulty 2 (configs/recipes/long_cot_countdown/sft_long.yaml and sft_short.yaml): long traces
are the stream of a depth-first search (every step, every dead end and backtrack, then the path
found), short traces the found path alone, the same problems in both (those whose search takes
more than 40 lines left out of both). Each style is trained once per SFT budget (tokens,
padding excluded; a run of its own with its own schedule for each budget, seed 0), and again
with seed 1 at the largest budget for the run-to-run spread. Each model is scored greedily on
the 200 held-out problems of synth:countdown:2 with 1,024 tokens to answer in: pass@1 on all of
them and on those that need backtracking (the greedy first attempt, always the step closest to
the target, misses: `tts.data.synthetic.countdown.greedy_solves`), graded by countdown's own
checker.

`grpo` (experiment 2): GRPO with the accuracy reward (grpo.yaml) from the long and the short
SFT model with the best pass@1, the same steps and problems; each final model scored as above.

`length` (experiment 3): GRPO from the best long model for 80 steps with a token budget set so
that 90% of its own samples on the RL problems fit, plain accuracy reward (grpo.yaml) against
the cosine length reward with the n-gram repetition penalty (grpo_cosine.yaml); per step the
mean length, the share cut by the budget and the pass@1 of the step's samples.

A finished run is not redone and a stopped one resumes from its checkpoint (the score of a
finished run is kept in its folder), so the script can be killed and started again; `grpo` and
`length` need `sft`'s models. Each stage adds its keys to
benchmarks/results/long_cot_countdown/summary.json (the others are kept) and draws its figure
beside it: sft_scaling.png, length_under_rl.png.
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

from tts.data.grading import grade_answer
from tts.data.jsonl import read_records
from tts.data.problem import Problem
from tts.data.synthetic import eval_set, train_problems
from tts.data.synthetic.countdown import Countdown, greedy_solves, parse_problem, search
from tts.engine import Completion, SamplingParams, load
from tts.prompts import build_prompt
from tts.verifiers import extract_answer

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

RECIPES = Path("configs/recipes/long_cot_countdown")
STYLES = ("long", "short")
EVAL_TOKENS = 1024
MAX_SEARCH_LINES = 40  # the SFT recipes' max_search_lines
FIT_SHARE = 0.9  # experiment 3's context budget: this share of the SFT model's streams fit
FIT_PROBLEMS = 200  # training problems sampled to measure it
LENGTH_STEPS = 80  # experiment 3 runs twice experiment 2's steps: length moves slowly


def run(loop: str, recipe: str, out: Path, *flags: str) -> Path:
    """Run (or resume, or reuse) `tts train LOOP --recipe RECIPE --out OUT FLAGS`; OUT/final."""
    final = out / "final"
    if not (final / "model.safetensors").exists():
        out.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "tts.cli", "train", loop, "--recipe"]
        command += [str(RECIPES / recipe), "--out", str(out), *flags]
        with (out / "output.txt").open("ab") as output:
            env = {**os.environ, "TQDM_DISABLE": "1"}
            subprocess.run(command, env=env, stdout=output, stderr=subprocess.STDOUT, check=True)
    return final


def sft_out(style: str, budget: int, seed: int, runs: Path) -> Path:
    """Where the `style` SFT run at `budget` tokens and `seed` lives."""
    return runs / f"sft_{style}_{budget}_seed{seed}"


def train(style: str, budget: int, seed: int, runs: Path) -> Path:
    """The `style` SFT recipe at `budget` tokens and `seed`; its final folder."""
    flags = ("--token-budget", str(budget), "--seed", str(seed))
    return run("sft", f"sft_{style}.yaml", sft_out(style, budget, seed, runs), *flags)


def subsets(problem_text: str) -> dict[str, bool]:
    """Which scores a held-out problem counts in: all; those that need backtracking (the greedy
    first attempt, always the step closest to the target, misses); those whose search stream
    fits `MAX_SEARCH_LINES` lines, as every training stream does; both."""
    numbers, target = parse_problem(problem_text)
    problem = Countdown(tuple(numbers), target, ())
    backtrack = not greedy_solves(problem)
    fits = len(search(problem)[0]) <= MAX_SEARCH_LINES
    return {
        "pass1": True,
        "pass1_backtrack": backtrack,
        "pass1_fits": fits,
        "pass1_fits_backtrack": fits and backtrack,
    }


def sample_all(
    final: Path, problems: list[Problem], params: list[SamplingParams]
) -> list[Completion]:
    """One completion of each problem (sampled with its own params) by the model in `final`,
    all in flight at once, so the engine batches them."""
    backend = load(final, "native", device="cpu")

    async def one(problem: Problem, sampling: SamplingParams) -> Completion:
        prompt = build_prompt(backend.tokenizer, problem.problem)
        [completion] = await backend.generate(prompt, sampling)
        return completion

    async def every() -> list[Completion]:
        return await asyncio.gather(*(one(p, sampling) for p, sampling in zip(problems, params)))

    return asyncio.run(every())


def score(final: Path) -> dict:
    """Greedy pass@1 of the model in `final` on synth:countdown:2 and on each of its `subsets`,
    graded by countdown's own checker (`grade_answer`: the expression reaches the target with
    the given numbers only); kept beside the model, each problem's grade included, so a rerun
    does not score it again."""
    path = final.parent / "countdown_eval.json"
    if path.exists() and "right" in (kept := json.loads(path.read_text())):
        return kept
    problems = eval_set("countdown", 2)
    greedy = SamplingParams(temperature=0, max_tokens=EVAL_TOKENS)
    completions = sample_all(final, problems, [greedy] * len(problems))
    right = [grade_answer(p, extract_answer(c.text)) for p, c in zip(problems, completions)]
    counted = [subsets(p.problem) for p in problems]
    result: dict = {"length_mean": float(np.mean([len(c.token_ids) for c in completions]))}
    for name in counted[0]:
        graded = [ok for ok, where in zip(right, counted) if where[name]]
        result[name] = sum(graded) / len(graded)
        result[f"{name}_problems"] = len(graded)
    result["right"] = right
    path.write_text(json.dumps(result) + "\n")
    return result


SUBSETS = ("pass1", "pass1_backtrack", "pass1_fits", "pass1_fits_backtrack")


def sft(args: argparse.Namespace) -> dict:
    budgets = args.budgets
    scores: dict[str, list[dict]] = {style: [] for style in STYLES}
    for budget in budgets:
        for style in STYLES:
            print(f"SFT {style}, {budget:,} tokens", flush=True)
            scores[style].append(score(train(style, budget, 0, args.runs)))
    seeds = {}
    for style in STYLES:
        print(f"SFT {style}, {budgets[-1]:,} tokens, seed 1", flush=True)
        again = score(train(style, budgets[-1], 1, args.runs))
        seeds[style] = {
            f"seed{seed}_{name}": run[name]
            for name in SUBSETS
            for seed, run in ((0, scores[style][-1]), (1, again))
        }
    record: dict = {"sft_compute_tokens": budgets, "sft_largest_budget_seeds": seeds}
    for style in STYLES:
        for name in SUBSETS:
            record[f"sft_{style}_{name}"] = [s[name] for s in scores[style]]
        record[f"sft_{style}_length_mean"] = [s["length_mean"] for s in scores[style]]
    record["sft_subset_problems"] = {
        name: scores["long"][0][f"{name}_problems"] for name in SUBSETS
    }
    draw(record, args.results / "sft_scaling.png")
    print(f"{'SFT tokens':>12} {'style':>6} " + " ".join(f"{n:>20}" for n in SUBSETS))
    for i, budget in enumerate(budgets):
        for style in STYLES:
            row = " ".join(f"{record[f'sft_{style}_{n}'][i]:>20.3f}" for n in SUBSETS)
            print(f"{budget:>12,} {style:>6} {row}")
    for style in STYLES:
        row = " ".join(f"{seeds[style][f'seed1_{n}']:>20.3f}" for n in SUBSETS)
        print(f"{'seed 1':>12} {style:>6} {row}")
    return record


def sft_scores(style: str, args: argparse.Namespace) -> dict[int, tuple[Path, dict]]:
    """Each budget's seed-0 SFT model of `style` and its score; stage sft must have run."""
    models = {}
    for budget in args.budgets:
        final = sft_out(style, budget, 0, args.runs) / "final"
        if not (final.parent / "countdown_eval.json").exists():
            raise SystemExit(f"{final} is not trained and scored yet: run stage sft first")
        models[budget] = (final, score(final))
    return models


def best_sft(style: str, args: argparse.Namespace) -> tuple[int, Path]:
    """The budget and model of `style` with the best held-out pass@1 (the smaller on a tie)."""
    models = sft_scores(style, args)
    budget = max(models, key=lambda b: (models[b][1]["pass1"], -b))
    return budget, models[budget][0]


def summary_of(scores: dict) -> dict:
    """A model's scores without the per-problem grades."""
    return {name: value for name, value in scores.items() if name != "right"}


def grpo(args: argparse.Namespace) -> dict:
    """Experiment 2: GRPO (grpo.yaml, accuracy reward) from the best long and the best short SFT
    model, the same steps, problems and token budget; the gain in greedy held-out pass@1."""
    record: dict = {"grpo_runs": {}}
    print(f"{'start':>6} {'SFT tokens':>11} " + " ".join(f"{n + ' gain':>25}" for n in SUBSETS))
    for style in STYLES:
        budget, start = best_sft(style, args)
        print(f"GRPO from the {style} SFT model ({budget:,} tokens)", flush=True)
        final = run("grpo", "grpo.yaml", args.runs / f"grpo_from_{style}", "--model", str(start))
        before, after = score(start), score(final)
        for name in SUBSETS:
            suffix = name.removeprefix("pass1")
            record[f"grpo_gain_from_{style}{suffix}"] = after[name] - before[name]
        record["grpo_runs"][style] = {
            "sft_tokens": budget,
            "before": summary_of(before),
            "after": summary_of(after),
        }
        cells = [f"{before[n]:.3f} -> {after[n]:.3f}" for n in SUBSETS]
        print(f"{style:>6} {budget:>11,} " + " ".join(f"{c:>25}" for c in cells))
    return record


def context_budget(start: Path, runs: Path) -> dict:
    """Experiment 3's token budget: the `FIT_SHARE` quantile of the SFT model's completion
    lengths on the first `FIT_PROBLEMS` RL problems (temperature 1, as RL samples, the whole
    context to write in); kept in runs/ so a rerun uses the same budget."""
    path = runs / "length_budget.json"
    if path.exists():
        return json.loads(path.read_text())
    problems = train_problems("countdown", 2, FIT_PROBLEMS)
    params = [
        SamplingParams(temperature=1.0, max_tokens=EVAL_TOKENS, seed=i)
        for i in range(len(problems))
    ]
    completions = sample_all(start, problems, params)
    lengths = [len(c.token_ids) for c in completions]
    budget = int(np.ceil(np.quantile(lengths, FIT_SHARE) / 8) * 8)
    fit = {
        "max_tokens": budget,
        "fit_share": float(np.mean([n <= budget for n in lengths])),
        "length_median": float(np.median(lengths)),
        "length_max": max(lengths),
        "cut_by_context": float(np.mean([c.finish_reason == "length" for c in completions])),
    }
    path.write_text(json.dumps(fit, indent=2) + "\n")
    return fit


REWARDS = {"plain": "grpo.yaml", "cosine": "grpo_cosine.yaml"}


def length(args: argparse.Namespace) -> dict:
    """Experiment 3: GRPO from the best long SFT model with a token budget its streams overrun
    (about 10% of them), plain accuracy reward against the cosine length reward with the
    repetition penalty; per step the mean length, the share cut by the budget and the pass@1 of
    the step's own samples (fresh training problems at temperature 1)."""
    budget, start = best_sft("long", args)
    fit = context_budget(start, args.runs)
    record: dict = {"length_start_sft_tokens": budget, "length_context": fit}
    print(f"budget {fit['max_tokens']} tokens: {fit['fit_share']:.0%} of the SFT model's fit")
    for reward, recipe in REWARDS.items():
        print(f"GRPO, {reward} reward", flush=True)
        out = args.runs / f"length_{reward}"
        flags = ["--model", str(start), "--max-tokens", str(fit["max_tokens"])]
        final = run("grpo", recipe, out, *flags, "--max-steps", str(LENGTH_STEPS))
        steps = [r for r in read_records(out / "log.jsonl") if "length_mean" in r]
        record[f"{reward}_length_curve"] = [r["length_mean"] for r in steps]
        record[f"{reward}_truncated_curve"] = [r["truncated"] for r in steps]
        record[f"{reward}_pass1_curve"] = [r["accuracy"] for r in steps]
        record[f"{reward}_final"] = summary_of(score(final))
    draw_length(record, args.results / "length_under_rl.png")
    print(f"{'reward':>7} {'length':>15} {'truncated':>15} {'pass@1':>15} {'held-out':>9}")
    for reward in REWARDS:
        cells = []
        for curve in ("length", "truncated", "pass1"):
            values = record[f"{reward}_{curve}_curve"]
            cells.append(f"{values[0]:>6.2f} -> {values[-1]:>6.2f}")
        held_out = record[f"{reward}_final"]["pass1"]
        print(f"{reward:>7} " + " ".join(f"{c:>15}" for c in cells) + f" {held_out:>9.3f}")
    return record


def draw_length(record: dict, path: Path) -> None:
    panels = [
        ("length", "mean completion length (tokens)"),
        ("truncated", "share cut by the token budget"),
        ("pass1", "pass@1 of the step's samples"),
    ]
    figure, grid = plt.subplots(1, 3, figsize=(15, 4.2))
    for axes, (curve, title) in zip(grid, panels):
        for reward in REWARDS:
            values = record[f"{reward}_{curve}_curve"]
            axes.plot(range(1, len(values) + 1), values, marker=".", label=f"{reward} reward")
        if curve == "length":
            axes.axhline(record["length_context"]["max_tokens"], color="grey", linestyle=":")
        axes.set_title(title)
        axes.set_xlabel("GRPO step")
        axes.grid(alpha=0.3)
        axes.legend()
    figure.suptitle("Countdown: GRPO from the long-CoT SFT model, budget at its 90th percentile")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def draw(record: dict, path: Path) -> None:
    """pass@1 against SFT tokens, long and short, on all held-out problems and those needing
    backtracking (left), and on those whose search fits the training streams' length (right);
    the largest budget's second seed as open markers."""
    figure, grid = plt.subplots(1, 2, figsize=(13, 4.5), sharey=True)
    budgets = record["sft_compute_tokens"]
    panels = [("pass1", "pass1_backtrack"), ("pass1_fits", "pass1_fits_backtrack")]
    for axes, (whole, hard) in zip(grid, panels):
        for style in STYLES:
            (line,) = axes.plot(budgets, record[f"sft_{style}_{whole}"], marker="o", label=style)
            color = line.get_color()
            axes.plot(
                budgets,
                record[f"sft_{style}_{hard}"],
                marker="x",
                linestyle="--",
                color=color,
                label=f"{style}, those that need backtracking",
            )
            seed1 = record["sft_largest_budget_seeds"][style]
            for name in (whole, hard):
                axes.plot(budgets[-1], seed1[f"seed1_{name}"], "o", mfc="none", color=color)
        counts = record["sft_subset_problems"]
        axes.set_title(
            f"{counts[whole]} held-out problems ({counts[hard]} need backtracking)"
            + (f", search within {MAX_SEARCH_LINES} lines" if whole == "pass1_fits" else "")
        )
        axes.set_xscale("log")
        axes.set_xlabel("SFT tokens")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    grid[0].set_ylabel("greedy pass@1 (synth:countdown:2)")
    figure.suptitle("Countdown: SFT on search streams (long) against found paths (short)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


STAGES = {"sft": sft, "grpo": grpo, "length": length}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=sorted(STAGES))
    parser.add_argument(
        "--budgets",
        type=lambda text: [int(budget) for budget in text.split(",")],
        default=[1_000_000, 3_000_000, 10_000_000],
        help="SFT token budgets, comma-separated",
    )
    parser.add_argument("--runs", type=Path, default=Path("runs/long_cot_countdown"))
    parser.add_argument(
        "--results", type=Path, default=Path("benchmarks/results/long_cot_countdown")
    )
    args = parser.parse_args()
    args.results.mkdir(parents=True, exist_ok=True)
    record = STAGES[args.stage](args)
    path = args.results / "summary.json"
    kept = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps(kept | record, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
