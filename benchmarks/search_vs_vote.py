"""Does a PRM-guided search match majority voting at 64 samples for a quarter of its tokens?

    python benchmarks/search_vs_vote.py [--model builtin] [--prm builtin]
        [--dataset synth:arith:3] [--limit 100] [--work runs/search-vs-vote]

The central claim of test-time compute (Snell et al., 2024; Hugging Face's search-and-learn
study): a verifier-guided search spends compute better than sampling and voting. One
`tts compare` run (resumable in WORK) puts majority voting at n = 1, 4, 16, 64 beside
best-of-N and weighted best-of-N at 4 and 16 (same samples, PRM selection) and beam search,
DVTS and MCTS at 4, 8 and 16, all scored by the same PRM. Generated tokens count what the
model wrote (a search's steps, a vote's samples); the tokens the PRM read are beside them in
each row (`scorer_tokens`).

Writes benchmarks/results/search_vs_vote.png (accuracy against generated tokens and wall
time, pass@n as the ceiling) and search_vs_vote.json: every row, majority@64's accuracy and
tokens, and the best search (beam, DVTS or MCTS) within a quarter of those tokens.
"""

from __future__ import annotations

import json
import platform
import shutil

from compare_flags import base_config, compare_parser

from tts.bench.compare import run_compare
from tts.bench.report import format_table

SEARCHES = ("beam", "dvts", "mcts")
STRATEGIES = [
    "majority@1,4,16,64",
    "best_of_n:aggregation=min@4,16",
    "weighted_best_of_n:aggregation=min@4,16",
    *(f"{name}@4,8,16" for name in SEARCHES),
]


def verdict(rows: list[dict]) -> dict:
    """Majority@64 against the best search within a quarter of its generated tokens."""
    vote = next(r for r in rows if r["strategy"] == "majority" and r["n"] == 64)
    budget = vote["tokens"] / 4
    searches = [
        r for r in rows if r["strategy"].split("[")[0] in SEARCHES and r["tokens"] <= budget
    ]
    best = max(searches, key=lambda r: (r["accuracy"], -r["tokens"]), default=None)
    return {
        "majority_at_64_accuracy": vote["accuracy"],
        "majority_at_64_tokens": vote["tokens"],
        "quarter_tokens": budget,
        "best_search_accuracy_at_quarter_tokens": best["accuracy"] if best else None,
        "best_search_strategy": f"{best['strategy']} n={best['n']}" if best else None,
        "best_search_tokens": best["tokens"] if best else None,
        "search_matches_vote": bool(best and best["accuracy"] >= vote["accuracy"]),
    }


def main() -> None:
    parser = compare_parser(__doc__.split("\n\n")[0], "synth:arith:3", 100, "runs/search-vs-vote")
    args = parser.parse_args()
    base = base_config(args)
    result = run_compare(base, STRATEGIES)
    rows = result["rows"]
    summary = verdict(rows)
    print(format_table(rows))
    print(json.dumps(summary, indent=2))
    args.results.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.work / "compare.png", args.results / "search_vs_vote.png")
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
    (args.results / "search_vs_vote.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.results / 'search_vs_vote.png'} and search_vs_vote.json")


if __name__ == "__main__":
    main()
