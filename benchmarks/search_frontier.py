"""The test-time-compute frontier on fresh problems: can a strategy get past the vote?

    python benchmarks/search_frontier.py [--prm builtin] [--dataset synth:arith:3:300:eval:27]
        [--work runs/search-frontier] [--strategies SPEC ...]

One `tts compare` run (resumable in WORK) on held-out `arith:3` problems drawn with a seed no
training run used: majority voting at 4, 16 and 64 samples beside the strategies that try to do
better with the same compute (weighted best-of-N, beam, MCTS, particle filtering with the PRM;
weighted best-of-N with the PRM and the policy's likelihood together; DeepConf and adaptive
self-consistency from the policy's own samples; auto, which picks per problem), each at budgets
of 4 to 64 samples' worth. Generated tokens count what the model
wrote; the tokens the PRM read are beside them (`scorer_tokens`).

Writes benchmarks/results/search_frontier.json: every row (accuracy, tokens, scorer tokens,
seconds, pass@n), majority@64's accuracy, pass@16, the best accuracy within majority@16's
generated tokens and the strategy that reached it, paired against majority@64 on the same
problems (the difference with a 95% bootstrap interval; "within" allows 1% over, the rounding
of where a step-level search's samples end), the tokens the best strategy needs to
match majority@64 (as a share of majority@64's), and auto against the best fixed strategy at
each budget; and search_frontier.png (accuracy against tokens).
"""

from __future__ import annotations

import json
import platform
import shutil
from collections import defaultdict
from typing import Any

import numpy as np
from compare_flags import base_config, compare_parser

from tts.bench.compare import run_compare
from tts.bench.report import format_table
from tts.data.jsonl import read_records

# The PRM and the policy's likelihood together, weights chosen on tuning problems
# (synth:arith:3:300 and synth:arith:3:400:eval:5), never on the problems reported here.
BOTH = "aggregation=min,confidence_weight=2,prm_weight=2"
BUDGET_SLACK = 0.01  # "within majority@16's tokens": at most 1% over them
STRATEGIES = [
    "majority:temperature=0@1",  # greedy decoding: one sample, the policy's mode
    "majority@4,16,64",
    "adaptive_majority@16,64",
    "deepconf:window=8,top_logprobs=5,keep=0.9@16,64",
    "deepconf:mode=offline,window=8,top_logprobs=5,keep=0.1@16,64",
    "weighted_best_of_n:aggregation=min@4,16,64",
    f"weighted_best_of_n:{BOTH}@4,16,64",
    "particle_filter@4,16",
    "particle_filter:confidence_weight=3@4,8,16,32,64",
    "auto@8,16,32,64",  # its default: a particle filter's probe, the same filter for the rest
    "auto:probe_with=majority,confidence=0.5625@16,64",  # Snell et al.'s: vote where 3 of 4 agree
    "beam@16",
    "mcts@16",
]


def family(label: str) -> str:
    return label.split("[")[0]


def paired(records: list[dict[str, Any]], a: tuple[str, int], b: tuple[str, int]) -> dict:
    """Accuracy of row `a` minus row `b` on the problems both solved, with a 95% bootstrap
    interval over problems (10,000 resamples, seed 0)."""
    correct: dict[tuple[str, int], dict[str, bool]] = defaultdict(dict)
    for r in records:
        correct[r["strategy"], r["n"]][r["problem_id"]] = r["correct"]
    shared = sorted(correct[a].keys() & correct[b].keys())
    diff = np.array([correct[a][p] - correct[b][p] for p in shared], dtype=float)
    rng = np.random.default_rng(0)
    means = diff[rng.integers(0, len(diff), (10_000, len(diff)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"difference": diff.mean(), "ci95": [low, high], "problems": len(shared)}


def by_accuracy(row: dict[str, Any]) -> tuple[float, float]:
    """A sort key: higher accuracy first, then fewer tokens."""
    return row["accuracy"], -row["tokens"]


def rival(
    row: dict[str, Any] | None, auto: dict[str, Any], records: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """A fixed strategy's row as auto's rival: its label and budget, accuracy, tokens, and auto
    minus it, paired on the same problems."""
    if row is None:
        return None
    return {
        "strategy": f"{row['strategy']} n={row['n']}",
        **{k: row[k] for k in ("accuracy", "tokens")},
        "auto_minus_it": paired(
            records, (auto["strategy"], auto["n"]), (row["strategy"], row["n"])
        ),
    }


def verdict(rows: list[dict[str, Any]], records: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's figures from the compare rows and the per-problem records."""
    vote = {r["n"]: r for r in rows if family(r["strategy"]) == "majority"}
    budget = vote[16]["tokens"]
    # 16 samples' worth: a step-level search's samples end within a token or so of a voter's
    # on average, which is no extra compute.
    within = [r for r in rows if r["tokens"] <= budget * (1 + BUDGET_SLACK)]
    best = max(within, key=by_accuracy)
    matching = [
        r
        for r in rows
        if r["strategy"] == best["strategy"] and r["accuracy"] >= vote[64]["accuracy"]
    ]
    cheapest = min(matching, key=lambda r: r["tokens"], default=None)
    auto_vs_best = {}
    default_auto = [
        r for r in rows if family(r["strategy"]) == "auto" and "probe_with=" not in r["strategy"]
    ]
    fixed = [r for r in rows if family(r["strategy"]) != "auto"]
    for auto in sorted(default_auto, key=lambda r: r["n"]):
        same_n = max((r for r in fixed if r["n"] == auto["n"]), key=by_accuracy, default=None)
        # Auto stops early on easy problems: the fair rival is the best fixed strategy that
        # spent no more tokens than it did.
        same_tokens = max((r for r in fixed if r["tokens"] <= auto["tokens"]), key=by_accuracy)
        auto_vs_best[str(auto["n"])] = {
            "auto_accuracy": auto["accuracy"],
            "auto_tokens": auto["tokens"],
            "best_fixed_at_same_n": rival(same_n, auto, records),
            "best_fixed_within_auto_tokens": rival(same_tokens, auto, records),
            "auto_at_or_above_same_n": bool(same_n and auto["accuracy"] >= same_n["accuracy"]),
            "auto_at_or_above_within_tokens": auto["accuracy"] >= same_tokens["accuracy"],
        }
    return {
        "majority_16_accuracy": vote[16]["accuracy"],
        "majority_16_tokens": budget,
        "majority_64_accuracy": vote[64]["accuracy"],
        "majority_64_tokens": vote[64]["tokens"],
        "pass_at_16": vote[16]["pass@n"],
        "pass_at_64": vote[64]["pass@n"],
        "best_strategy": f"{best['strategy']} n={best['n']}",
        "best_accuracy_at_majority16_tokens": best["accuracy"],
        "best_tokens": best["tokens"],
        "best_scorer_tokens": best["scorer_tokens"],
        "best_vs_majority_64": paired(
            records, (best["strategy"], best["n"]), (vote[64]["strategy"], 64)
        ),
        "tokens_to_match_majority_64": (
            cheapest["tokens"] / vote[64]["tokens"] if cheapest else None
        ),
        "auto_vs_best_fixed": auto_vs_best,
    }


def main() -> None:
    parser = compare_parser(
        __doc__.split("\n\n")[0], "synth:arith:3:300:eval:27", None, "runs/search-frontier"
    )
    parser.add_argument("--strategies", nargs="+", default=STRATEGIES)
    args = parser.parse_args()
    base = base_config(args)
    result = run_compare(base, args.strategies, report=print)
    rows = result["rows"]
    summary = verdict(rows, read_records(args.work / "results.jsonl"))
    print(format_table(rows))
    print(json.dumps(summary, indent=2))
    args.results.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.work / "compare.png", args.results / "search_frontier.png")
    record = {
        "model": args.model,
        "prm": args.prm,
        "dataset": args.dataset,
        "problems": result["problems"],
        "temperature": args.temperature,
        "max_tokens": args.max_tokens,
        "machine": platform.processor() or platform.machine(),
        **summary,
        "rows": rows,
        "skipped": result["skipped"],
    }
    path = args.results / "search_frontier.json"
    path.write_text(json.dumps(record, indent=2, default=float) + "\n")
    print(f"wrote {path} and search_frontier.png")


if __name__ == "__main__":
    main()
