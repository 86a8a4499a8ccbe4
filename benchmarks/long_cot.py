"""The experiments of Yeo et al. (2025), "Demystifying Long Chain-of-Thought Reasoning in LLMs",
at the scale of a CPU, on the arith task with the built-in model's architecture.

    python benchmarks/long_cot.py [--recipes configs/recipes/long_cot] [--results ...]

1. SFT from scratch on long-CoT traces (`<think>` with slips noticed and repaired, then the
   short solution) vs on short-CoT traces, the same token budget each (sft_long.yaml,
   sft_short.yaml): held-out pass@1 on synth:arith:1.
2. GRPO with the accuracy reward from each SFT model (grpo_long.yaml, grpo_short.yaml), on
   synth:arith:1 problems (the long-CoT model is right about 1% of the time on arith:3): the
   gain in pass@1 over its start.
3. GRPO from the long-CoT model with the accuracy reward vs with the cosine length reward and
   the n-gram repetition penalty (grpo_long.yaml, grpo_long_cosine.yaml): mean response length
   and accuracy over the steps.

Each recipe is one `tts train` command, run here in order; a finished run is not redone and a
stopped one resumes, so the script can be killed and started again. pass@1 is every GRPO
run's own eval (100 held-out problems, `eval_samples` samples each at temperature 1.0, the
same seeds at every eval), so step 0 of a GRPO run is its SFT model's score.

Writes benchmarks/results/long_cot/summary.json (sft_long_acc, sft_short_acc,
grpo_gain_from_long, grpo_gain_from_short, the SFT token counts, every eval and the per-step
length curves of experiment 3) and long_cot.png.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tts.data.jsonl import read_records
from tts.train import grpo, sft
from tts.train.grpo_config import GRPOConfig

SFT_RUNS = ("sft_short", "sft_long")
GRPO_RUNS = ("grpo_short", "grpo_long", "grpo_long_cosine")


def train_all(recipes: Path) -> dict[str, sft.SFTConfig | GRPOConfig]:
    """Run (or finish) each recipe; the config of each."""
    loops = [(name, sft.load_config, sft.train_sft) for name in SFT_RUNS]
    loops += [(name, grpo.load_config, grpo.train_grpo) for name in GRPO_RUNS]
    configs = {}
    for name, load_config, train in loops:
        config = load_config(recipes / f"{name}.yaml")
        if not (config.out / "final").exists():
            train(config)
        configs[name] = config
    return configs


def evals(log: list[dict]) -> list[dict]:
    return [{"step": r["step"], "pass@1": r["eval_pass@1"]} for r in log if "eval_pass@1" in r]


def length_curve(log: list[dict]) -> list[dict]:
    """Per step: mean and max completion length, training accuracy and reward."""
    keys = ("length_mean", "length_max", "accuracy", "reward")
    return [{"step": r["step"]} | {k: r[k] for k in keys} for r in log if "length_mean" in r]


def summarise(configs: dict[str, sft.SFTConfig | GRPOConfig]) -> dict:
    logs = {name: read_records(config.out / "log.jsonl") for name, config in configs.items()}
    scores = {name: evals(logs[name]) for name in GRPO_RUNS}

    def gain(name: str) -> float:
        return scores[name][-1]["pass@1"] - scores[name][0]["pass@1"]

    return {
        "sft_long_acc": scores["grpo_long"][0]["pass@1"],
        "sft_short_acc": scores["grpo_short"][0]["pass@1"],
        "grpo_gain_from_long": gain("grpo_long"),
        "grpo_gain_from_short": gain("grpo_short"),
        "grpo_gain_from_long_cosine": gain("grpo_long_cosine"),
        "eval_dataset": {name: configs[name].eval_dataset for name in GRPO_RUNS},
        "sft_tokens": {name: logs[name][-1]["tokens"] for name in SFT_RUNS},
        "sft_steps": {name: logs[name][-1]["step"] for name in SFT_RUNS},
        "eval_pass@1": scores,
        "length_curves": {
            "accuracy_reward": length_curve(logs["grpo_long"]),
            "cosine_repetition_reward": length_curve(logs["grpo_long_cosine"]),
        },
    }


def plot(summary: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {
        "grpo_short": "short-CoT SFT + GRPO (accuracy)",
        "grpo_long": "long-CoT SFT + GRPO (accuracy)",
        "grpo_long_cosine": "long-CoT SFT + GRPO (cosine + repetition)",
    }
    colors = {"grpo_short": "tab:blue", "grpo_long": "tab:orange", "grpo_long_cosine": "tab:green"}
    curves = {
        "grpo_long": summary["length_curves"]["accuracy_reward"],
        "grpo_long_cosine": summary["length_curves"]["cosine_repetition_reward"],
    }
    panels = [
        ("1+2: held-out pass@1 from each SFT start", ("grpo_short", "grpo_long"), "pass@1"),
        ("3: mean response length (tokens)", ("grpo_long", "grpo_long_cosine"), "length_mean"),
        ("3: held-out pass@1 by reward", ("grpo_long", "grpo_long_cosine"), "pass@1"),
    ]
    figure, grid = plt.subplots(1, 3, figsize=(15, 4.2), dpi=120)
    for axes, (title, runs, metric) in zip(grid, panels):
        for run in runs:
            points = summary["eval_pass@1"][run] if metric == "pass@1" else curves[run]
            steps = [p["step"] for p in points]
            values = [p[metric] for p in points]
            axes.plot(steps, values, marker=".", color=colors[run], label=labels[run])
        axes.set_title(title)
        axes.set_xlabel("GRPO step")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", type=Path, default=Path("configs/recipes/long_cot"))
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results/long_cot"))
    args = parser.parse_args()
    summary = summarise(train_all(args.recipes))
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(summary, args.results / "long_cot.png")
    headline = {k: v for k, v in summary.items() if isinstance(v, float)}
    print(json.dumps(headline | {"sft_tokens": summary["sft_tokens"]}, indent=2))
    print(f"wrote {args.results / 'summary.json'} and long_cot.png")


if __name__ == "__main__":
    main()
