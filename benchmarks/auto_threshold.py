"""Choosing auto's escalation threshold: replay `auto` at every threshold from two runs.

    python benchmarks/auto_threshold.py [--dataset synth:arith:3:400:eval:5] [--limit 300]
        [--n 16] [--probe 4] [--strategy particle_filter:confidence_weight=3] [--hard SPEC]
        [--work runs/auto-threshold]

`auto` spends `probe` solutions' worth on every problem and the rest, n - probe, only where the
probe's answer's support is below its `confidence` threshold; when both stages run the same
strategy the answer is then chosen among both stages' candidates. Neither stage's samples depend
on the threshold, so one `tts compare` of the probe's strategy at `probe` and the hard stage's
(`--hard`, by default the same) at `n - probe` and at `n` (resumable in WORK) replays auto at
every threshold for the price of one, with auto's own `support` and `select`: per threshold,
accuracy, the share of problems escalated and the tokens per problem (generated, and what the
scorer read), beside the hard stage's strategy at n alone. The replay draws its two stages from
the compare run's seeds, not auto's, so it matches a real run in distribution, not sample for
sample.

Tune on problems the reported results never use: the default dataset is the frontier's tuning
problems (docs/frontier.md), never its fresh ones.

Writes benchmarks/results/auto_threshold_n{N}.json.
"""

from __future__ import annotations

import json
import platform
from typing import Any

from compare_flags import base_config, compare_parser

from tts.bench.compare import parse_strategy, run_compare
from tts.bench.report import format_table
from tts.data.jsonl import read_records
from tts.search.auto import support
from tts.search.base import Candidate, SearchResult
from tts.search.select import select

THRESHOLDS = [i / 20 for i in range(21)]


def candidates(record: dict[str, Any]) -> list[Candidate]:
    return [
        Candidate(text=c["text"], answer=c["answer"], score=c["score"], tokens=c["tokens"])
        for c in record["candidates"]
    ]


def replay(
    probes: dict[str, dict], hards: dict[str, dict], threshold: float, selection: str | None
) -> dict[str, Any]:
    """auto's accuracy, escalated share and tokens per problem at one threshold; `selection`
    chooses among both stages' candidates, None: the hard stage's answer stands."""
    correct = escalated = tokens = scorer_tokens = 0
    for problem, probe in probes.items():
        stages = [probe]
        pool = candidates(probe)
        answer = SearchResult(answer=probe["answer"], text="", candidates=pool)
        right = probe["correct"]
        if support(answer) < threshold:
            hard = hards[problem]
            right = hard["correct"]
            if selection:
                pool = pool + candidates(hard)
                chosen = select(pool, selection)
                flags = [c["correct"] for c in probe["candidates"] + hard["candidates"]]
                right = bool(chosen and flags[pool.index(chosen)])
            escalated += 1
            stages.append(hard)
        correct += right
        tokens += sum(r["usage"]["completion_tokens"] for r in stages)
        scorer_tokens += sum(r["usage"]["scorer_tokens"] for r in stages)
    problems = len(probes)
    return {
        "confidence": threshold,
        "accuracy": correct / problems,
        "escalated": escalated / problems,
        "tokens": tokens / problems,
        "scorer_tokens": scorer_tokens / problems,
    }


def main() -> None:
    parser = compare_parser(
        __doc__.split("\n\n")[0], "synth:arith:3:400:eval:5", 300, "runs/auto-threshold"
    )
    parser.add_argument("--n", type=int, default=16, help="auto's budget")
    parser.add_argument("--probe", type=int, default=4, help="auto's probe")
    parser.add_argument("--strategy", default="particle_filter:confidence_weight=3")
    parser.add_argument("--hard", default=None, help="the hard stage's strategy (--strategy)")
    parser.add_argument("--selection", default="weighted", help="the strategy's own selection")
    args = parser.parse_args()
    if not 0 < args.probe < args.n:
        parser.error(f"--probe ({args.probe}) must be between 0 and --n ({args.n})")
    base = base_config(args)
    hard = args.hard or args.strategy
    if hard == args.strategy and args.n == 2 * args.probe:
        # A row's seed derives from the problem and n: both stages would draw the same samples.
        parser.error("the hard stage would replay the probe's samples: choose --probe != n / 2")
    specs = [f"{args.strategy}@{args.probe}", f"{hard}@{args.n - args.probe},{args.n}"]
    result = run_compare(base, specs, report=print)
    probe_row, hard_row, alone = result["rows"]  # in the order of the specs
    records = read_records(args.work / "results.jsonl")

    def by_problem(row: dict[str, Any]) -> dict[str, dict]:
        key = row["strategy"], row["n"]
        return {r["problem_id"]: r for r in records if (r["strategy"], r["n"]) == key}

    probes, hards = by_problem(probe_row), by_problem(hard_row)
    probes = {p: probes[p] for p in sorted(probes.keys() & hards.keys())}
    # As auto: one strategy in both stages chooses among all their candidates.
    same = parse_strategy(args.strategy)[0] == parse_strategy(hard)[0]
    replayed = [replay(probes, hards, t, args.selection if same else None) for t in THRESHOLDS]
    print(format_table(result["rows"]))
    print(f"\nauto at n={args.n}: {args.strategy}@{args.probe}, then {hard}@{args.n - args.probe}")
    print("confidence  accuracy  escalated  tokens  scorer tokens")
    for row in replayed:
        print(
            f"{row['confidence']:>10.2f}  {row['accuracy']:>8.3f}  {row['escalated']:>9.0%}"
            f"  {row['tokens']:>6,.0f}  {row['scorer_tokens']:>13,.0f}"
        )
    accuracy, tokens = alone["accuracy"], alone["tokens"]
    print(f"{hard} at n={args.n} alone: {accuracy:.3f} with {tokens:,.0f} tokens")
    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / f"auto_threshold_n{args.n}.json"
    record = {
        "model": args.model,
        "prm": args.prm,
        "dataset": args.dataset,
        "problems": len(probes),
        "strategy": args.strategy,
        "hard": hard,
        "n": args.n,
        "probe": args.probe,
        "machine": platform.processor() or platform.machine(),
        "alone": {k: alone[k] for k in ("accuracy", "tokens", "scorer_tokens")},
        "replay": replayed,
        "runs": result["rows"],
    }
    path.write_text(json.dumps(record, indent=2, default=float) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
