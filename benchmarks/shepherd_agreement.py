"""Math-Shepherd process labels against a synthetic task's own step checker, at several k.

    python benchmarks/shepherd_agreement.py [--model builtin] [--dataset synth:arith:3]
        [--limit 100] [--n 4] [--ks 8,32] [--work runs/shepherd-agreement]

Runs `tts data shepherd` once per k (resumable: the records go to WORK/k{K}.jsonl) and compares
each intermediate step's labels with `tts.data.synthetic.check_step` (a step is right when it
and every step before it are valid moves). The last step of a solution is left out: its label
is the solution's own correctness, not an estimate. Prints one table and writes
benchmarks/results/shepherd_agreement.json.

Columns: agreement of the hard label (some completion reaches the gold) and of the soft label
(share >= 0.5) with the checker; how often a step the checker calls wrong is labelled wrong,
and how often a right step is; the share of the step completions' prompt tokens served from
the prefix cache.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

from tts.data.job import progress_path, run_job
from tts.data.jsonl import read_records
from tts.data.shepherd import JOB, ShepherdConfig, agreement


def measure(args: argparse.Namespace, k: int) -> dict:
    config = ShepherdConfig(
        model=args.model,
        dataset=args.dataset,
        out=args.work / f"k{k}.jsonl",
        limit=args.limit,
        n=args.n,
        k=k,
        max_tokens=args.max_tokens,
        concurrency=args.concurrency,
    )
    lines = run_job(JOB, config)
    c = agreement(read_records(config.out))
    if c is None:
        raise SystemExit(f"{args.dataset} has no step checker: use a synth:TASK:D dataset")
    stats = [entry["stats"] for entry in read_records(progress_path(config.out))[1:]]
    right = c["right_hard_right"] + c["right_hard_wrong"]
    wrong = c["wrong_hard_right"] + c["wrong_hard_wrong"]
    prompt = sum(s["prompt_tokens"] for s in stats)
    return {
        "k": k,
        "steps": right + wrong,
        "checker_wrong_steps": wrong,
        "hard_agreement": (c["right_hard_right"] + c["wrong_hard_wrong"]) / (right + wrong),
        "soft_agreement": c["soft_agree"] / (right + wrong),
        "wrong_labelled_wrong": c["wrong_hard_wrong"] / wrong if wrong else None,
        "right_labelled_wrong": c["right_hard_wrong"] / right if right else None,
        "cached_share": sum(s["cached_tokens"] for s in stats) / prompt if prompt else None,
        "counts": c,
        "summary": lines,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="builtin")
    parser.add_argument("--dataset", default="synth:arith:3")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--n", type=int, default=4, help="solutions per problem")
    parser.add_argument("--ks", default="8,32", help="completions per step, comma-separated")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--work", type=Path, default=Path("runs/shepherd-agreement"))
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/shepherd_agreement.json")
    )
    args = parser.parse_args()
    rows = [measure(args, int(k)) for k in args.ks.split(",")]
    print(f"\n{args.model} on {args.dataset} ({args.limit} problems, {args.n} solutions each)")
    print("   k  steps  wrong  hard agree  soft agree  wrong->wrong  right->wrong  cached")
    for r in rows:
        print(
            f"{r['k']:>4} {r['steps']:>6} {r['checker_wrong_steps']:>6}"
            f" {r['hard_agreement']:>11.3f} {r['soft_agreement']:>11.3f}"
            f" {r['wrong_labelled_wrong']:>13.3f}"
            f" {r['right_labelled_wrong']:>13.3f} {r['cached_share']:>7.3f}"
        )
    result = {
        "model": args.model,
        "dataset": args.dataset,
        "limit": args.limit,
        "n": args.n,
        "max_tokens": args.max_tokens,
        "machine": platform.processor() or platform.machine(),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
