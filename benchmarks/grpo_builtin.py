"""Does GRPO raise the built-in model's held-out pass@1 by 5 points in a run that fits in an hour?

    python benchmarks/grpo_builtin.py [--recipe configs/recipes/grpo.yaml] [--limit 200] [--n 16]

Runs the GRPO recipe (a finished run is reused, a stopped one resumes), then scores its start
model and its final model the same way outside training: `tts bench` majority voting with `--n`
samples on each of the first `--limit` problems of the recipe's eval set, at the rollout
temperature and token budget, the same seeds for both, so pass@1 (the per-sample accuracy),
maj@n and pass@n are paired. The run's own evals (every `eval_every` steps) are in its log.

Both are scored on the run's own eval problems (`eval_limit`) and on the first `--limit`.
Writes benchmarks/results/grpo_builtin.json (the recipe, every training eval, the bench rows of
both models at both sizes, the gains, and the training time when this call trained) and
grpo_builtin.png (reward, mean length, entropy and eval pass@1 against steps).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tts.bench.run import BenchConfig, run_bench
from tts.data.jsonl import read_records
from tts.train import grpo
from tts.train.curves import plot_log
from tts.train.grpo_config import GRPOConfig


def bench_row(model: str, config: GRPOConfig, limit: int, n: int, work: Path) -> dict:
    bench = BenchConfig(
        model=model,
        dataset=config.eval_dataset,
        strategy="majority",
        ns=[n],
        limit=limit,
        max_tokens=config.max_tokens,
        temperature=config.temperature,
        top_p=config.top_p,
        out=work,
    )
    (row,) = run_bench(bench)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", type=Path, default=Path("configs/recipes/grpo.yaml"))
    parser.add_argument("--limit", type=int, default=200, help="eval problems for the bench")
    parser.add_argument("--n", type=int, default=16, help="samples per problem for the bench")
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    config = grpo.load_config(args.recipe)
    if not config.eval_dataset:
        parser.error(f"{args.recipe} has no eval_dataset to score on")
    train_seconds = None
    if not (config.out / "final").exists():
        started = time.perf_counter()
        grpo.train_grpo(config)
        train_seconds = time.perf_counter() - started
    evals = [
        {"step": r["step"], "pass@1": r["eval_pass@1"]}
        for r in read_records(config.out / "log.jsonl")
        if "eval_pass@1" in r
    ]
    # The run's own eval problems (eval_limit) and the wider set; the second call reuses the
    # first's samples, as a bench folder resumes.
    limits = sorted({config.eval_limit, args.limit})
    models = {"start": config.model, "final": str(config.out / "final")}
    rows = {
        f"{name} {limit}": bench_row(model, config, limit, args.n, config.out / f"bench-{name}")
        for limit in reversed(limits)
        for name, model in models.items()
    }
    gains = {
        f"bench_gain_{metric}_{limit}_problems": rows[f"final {limit}"][key]
        - rows[f"start {limit}"][key]
        for limit in limits
        for metric, key in (("pass@1", "mean@n"), (f"maj@{args.n}", "maj@n"))
    }
    record = {
        "recipe": str(args.recipe),
        "config": config.model_dump(mode="json"),
        "train_seconds": train_seconds,
        "eval_pass@1": evals,
        "gain_in_training_eval": evals[-1]["pass@1"] - evals[0]["pass@1"],
        "bench_samples": args.n,
        "bench": rows,
        **gains,
    }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "grpo_builtin.json").write_text(json.dumps(record, indent=2) + "\n")
    metrics = ["reward", "length_mean", "entropy", "eval_pass@1"]
    plot_log(config.out, metrics, args.results / "grpo_builtin.png")
    print(f"{'model, problems':<16} {'pass@1':>7} {f'maj@{args.n}':>7} {f'pass@{args.n}':>8}")
    for name, row in rows.items():
        print(f"{name:<16} {row['mean@n']:>7.3f} {row['maj@n']:>7.3f} {row['pass@n']:>8.3f}")
    print(json.dumps({k: v for k, v in record.items() if "gain" in k}, indent=2))
    print(f"wrote {args.results / 'grpo_builtin.json'} and grpo_builtin.png")


if __name__ == "__main__":
    main()
