"""Long chain-of-thought where search pays: the findings of Yeo et al. (2025), "Demystifying
Long Chain-of-Thought Reasoning in LLMs", tested on countdown search streams (Gandhi et al.,
2024, "Stream of Search"), at the scale of a 2-core CPU.

    python benchmarks/long_cot_countdown.py sft [--budgets 1000000,3000000,10000000]

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

A finished run is not redone and a stopped one resumes from its checkpoint (the score of a
finished run is kept in its folder), so the script can be killed and started again. Writes
benchmarks/results/long_cot_countdown/summary.json (the keys of this stage; the file's other
keys are kept) and sft_scaling.png. Experiments 2 (GRPO from the best long and short models)
and 3 (length under RL with the plain and the cosine reward) are stages still to come.
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

from tts.data.problem import Problem
from tts.data.synthetic import eval_set
from tts.data.synthetic.countdown import Countdown, check_answer, greedy_solves, parse_problem
from tts.engine import SamplingParams, load
from tts.prompts import build_prompt
from tts.verifiers import extract_answer

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

RECIPES = Path("configs/recipes/long_cot_countdown")
STYLES = ("long", "short")
EVAL_TOKENS = 1024


def train(style: str, budget: int, seed: int, runs: Path) -> Path:
    """Train (or resume, or reuse) the `style` recipe at `budget` tokens; its final folder."""
    out = runs / f"sft_{style}_{budget}_seed{seed}"
    final = out / "final"
    if not (final / "model.safetensors").exists():
        out.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "tts.cli", "train", "sft", "--recipe"]
        command += [str(RECIPES / f"sft_{style}.yaml"), "--out", str(out)]
        command += ["--token-budget", str(budget), "--seed", str(seed)]
        with (out / "output.txt").open("ab") as output:
            env = {**os.environ, "TQDM_DISABLE": "1"}
            subprocess.run(command, env=env, stdout=output, stderr=subprocess.STDOUT, check=True)
    return final


def needs_backtracking(problem_text: str) -> bool:
    numbers, target = parse_problem(problem_text)
    return not greedy_solves(Countdown(tuple(numbers), target, ()))


def score(final: Path) -> dict[str, float]:
    """Greedy pass@1 of the model in `final` on synth:countdown:2, all and the backtracking
    share, graded by countdown's own checker (the expression reaches the target with the given
    numbers only; `is_correct` would take any expression equal to the target); kept beside the
    model so a rerun does not score it again."""
    path = final.parent / "countdown_eval.json"
    if path.exists():
        return json.loads(path.read_text())
    problems = eval_set("countdown", 2)
    backend = load(final, "native", device="cpu")
    greedy = SamplingParams(temperature=0, max_tokens=EVAL_TOKENS)

    async def one(problem: Problem) -> bool:
        prompt = build_prompt(backend.tokenizer, problem.problem)
        [completion] = await backend.generate(prompt, greedy)
        answer = extract_answer(completion.text)
        return answer is not None and check_answer(problem.problem, answer)

    async def every() -> list[bool]:
        return await asyncio.gather(*(one(problem) for problem in problems))

    right = asyncio.run(every())
    hard = [ok for ok, p in zip(right, problems) if needs_backtracking(p.problem)]
    result = {
        "pass1": sum(right) / len(right),
        "pass1_backtrack": sum(hard) / len(hard),
        "backtrack_problems": len(hard),
    }
    path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def sft(args: argparse.Namespace) -> dict:
    budgets = [int(b) for b in args.budgets.split(",")]
    scores: dict[str, list[dict]] = {style: [] for style in STYLES}
    for budget in budgets:
        for style in STYLES:
            print(f"SFT {style}, {budget:,} tokens", flush=True)
            scores[style].append(score(train(style, budget, 0, args.runs)))
    spread = {}
    for style in STYLES:
        print(f"SFT {style}, {budgets[-1]:,} tokens, seed 1", flush=True)
        again = score(train(style, budgets[-1], 1, args.runs))
        spread[style] = {
            "seed1_pass1": again["pass1"],
            "seed1_pass1_backtrack": again["pass1_backtrack"],
            "pass1_spread": abs(again["pass1"] - scores[style][-1]["pass1"]),
        }
    record = {"sft_compute_tokens": budgets, "sft_largest_budget_seeds": spread}
    for style in STYLES:
        record[f"sft_{style}_pass1"] = [s["pass1"] for s in scores[style]]
        record[f"sft_{style}_pass1_backtrack"] = [s["pass1_backtrack"] for s in scores[style]]
    draw(record, args.results / "sft_scaling.png")
    print(f"{'SFT tokens':>12} {'long':>7} {'short':>7} {'long bt':>8} {'short bt':>8}")
    for i, budget in enumerate(budgets):
        row = [record[f"sft_{s}_pass1"][i] for s in STYLES]
        row += [record[f"sft_{s}_pass1_backtrack"][i] for s in STYLES]
        print(f"{budget:>12,} " + " ".join(f"{v:>7.3f}" for v in row))
    return record


def draw(record: dict, path: Path) -> None:
    figure, axes = plt.subplots(figsize=(7, 4.5))
    budgets = record["sft_compute_tokens"]
    for style in STYLES:
        (line,) = axes.plot(budgets, record[f"sft_{style}_pass1"], marker="o", label=style)
        axes.plot(
            budgets,
            record[f"sft_{style}_pass1_backtrack"],
            marker="x",
            linestyle="--",
            color=line.get_color(),
            label=f"{style}, problems that need backtracking",
        )
    axes.set_xscale("log")
    axes.set_xlabel("SFT tokens")
    axes.set_ylabel("held-out greedy pass@1 (synth:countdown:2)")
    axes.set_title("Countdown: search streams (long) against found paths (short)")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


STAGES = {"sft": sft}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=sorted(STAGES))
    parser.add_argument("--budgets", default="1000000,3000000,10000000")
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
