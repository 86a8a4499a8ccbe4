"""Which verifier selects best, on the same samples: rescore a finished run's candidates.

    python benchmarks/prm_rescore.py --run runs/search-frontier \
        --strategy "weighted_best_of_n[aggregation=min,prm=builtin]" --n 16 \
        --prm builtin --prm runs/large-prm/prm/final --prm runs/confident-prm/prm/final

Comparing PRMs by rerunning a search costs a full generation per PRM and lets the samples
differ. This rescores the candidates a `tts compare` or `tts bench` run already stored (one
strategy and budget from its results.jsonl) with each `--prm` (the first is the baseline), and
with their ensemble (the mean of their step probabilities) when there are several, then picks
each problem's answer by weighted best-of-N: the PRM's score alone (per-step scores aggregated
by `--aggregation`), and as the product of experts with the policy's likelihood that
`weighted_best_of_n:confidence_weight=2,prm_weight=2` uses, PRM^2 x exp(2 (log pi(sample) -
the best log pi of the problem's samples)); `--product A,B` (repeatable) rescores with other
weights, PRM^A x exp(B ...), to retune them for a new PRM on tuning problems. log pi is
recomputed by the policy (`--model`) on the sample's text after its prompt (with the run's
`instruction`), one tokenization, the end-of-turn token included when the sample stopped.

Prints the table and writes benchmarks/results/prm_rescore.json: per scorer, accuracy alone
and with the likelihood (per pair of weights), each paired against the first PRM on the same
problems (difference and 95% bootstrap interval, `search_frontier.paired`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import torch
from search_frontier import paired
from transformers import AutoModelForCausalLM, AutoTokenizer

from tts.data.datasets import load_dataset
from tts.data.jsonl import read_records
from tts.models.builtin import resolve_model
from tts.prompts import DEFAULT_INSTRUCTION, build_prompt
from tts.search.auto import DEFAULT_OPTIONS
from tts.search.base import Candidate
from tts.search.best_of_n import product_of_experts, split_steps
from tts.search.select import select
from tts.train.logprobs import token_logprobs
from tts.verifiers import aggregate, load_scorer

DELIMITER = "\n\n"  # weighted_best_of_n's step delimiter, the runs' default
# The product's weights that auto and the frontier use, chosen on tuning problems.
PRODUCT = (
    DEFAULT_OPTIONS["weighted_best_of_n"]["prm_weight"],
    DEFAULT_OPTIONS["weighted_best_of_n"]["confidence_weight"],
)


def weights(text: str) -> tuple[float, float]:
    """`--product A,B`: the PRM's weight and the likelihood's."""
    try:
        prm_weight, confidence_weight = (float(part) for part in text.split(","))
    except ValueError:
        message = f"expected PRM_WEIGHT,LIKELIHOOD_WEIGHT, got {text!r}"
        raise argparse.ArgumentTypeError(message) from None
    return prm_weight, confidence_weight


@torch.no_grad()
def log_likelihoods(model, tokenizer, prompt: str, candidates: list[dict]) -> list[float]:
    """log pi of each candidate's text after `prompt` (and of the end of turn, if it stopped)."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    batch = []
    for candidate in candidates:
        ids = tokenizer(candidate["text"], add_special_tokens=False)["input_ids"]
        if candidate["finish_reason"] == "stop" and tokenizer.eos_token_id is not None:
            ids = [*ids, tokenizer.eos_token_id]
        batch.append(prompt_ids + ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    logprobs, mask, _ = token_logprobs(model, batch, [len(prompt_ids)] * len(batch), pad, 1.0)
    return (logprobs * mask).sum(dim=1).tolist()


def pick(candidates: list[dict], scores: list[float]) -> bool:
    """Whether weighted best-of-N with these scores answers the problem right."""
    rescored = [
        Candidate(c["text"], c["answer"], s, c["tokens"], c["finish_reason"])
        for c, s in zip(candidates, scores)
    ]
    chosen = select(rescored, "weighted")
    return any(r is chosen and c["correct"] for r, c in zip(rescored, candidates))


async def step_scores(scorers, problem: str, candidates: list[dict]) -> list[list[list[float]]]:
    """Per scorer, per candidate, its step scores."""
    return [
        await asyncio.gather(
            *(s.score(problem, split_steps(c["text"], DELIMITER)) for c in candidates)
        )
        for s in scorers
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="folder with results.jsonl")
    parser.add_argument("--strategy", required=True, help="the stored strategy label")
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--prm", action="append", required=True, help="PRM folder or builtin")
    parser.add_argument("--aggregation", default="min", help="last|min|prod|mean")
    parser.add_argument("--model", default="builtin", help="the policy that wrote the samples")
    parser.add_argument(
        "--product",
        type=weights,
        action="append",
        help="PRM_WEIGHT,LIKELIHOOD_WEIGHT of the product with the likelihood "
        f"(default {PRODUCT[0]:g},{PRODUCT[1]:g})",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/prm_rescore.json"))
    args = parser.parse_args()
    products = args.product or [PRODUCT]
    modes = ["alone", *(f"with likelihood {a:g},{b:g}" for a, b in products)]

    records = [
        r
        for r in read_records(args.run / "results.jsonl")
        if r["strategy"] == args.strategy and r["n"] == args.n
    ]
    if not records:
        raise SystemExit(f"no {args.strategy} rows at n={args.n} in {args.run}/results.jsonl")
    problems = {p.id: p.problem for p in load_dataset(records[0]["dataset"])}
    scorers = [load_scorer(path) for path in args.prm]
    names = [*args.prm, *(["mean of the PRMs"] if len(args.prm) > 1 else [])]
    policy_path = resolve_model(args.model)
    tokenizer = AutoTokenizer.from_pretrained(policy_path)
    model = AutoModelForCausalLM.from_pretrained(policy_path, dtype=torch.float32).eval()

    outcomes: list[dict] = []  # one row per (scorer, problem, mode), as `paired` reads them
    for record in records:
        problem, candidates = problems[record["problem_id"]], record["candidates"]
        per_prm = asyncio.run(step_scores(scorers, problem, candidates))
        if len(scorers) > 1:
            per_prm.append([[sum(v) / len(v) for v in zip(*steps)] for steps in zip(*per_prm)])
        instruction = record["params"].get("instruction", DEFAULT_INSTRUCTION)
        prompt = build_prompt(tokenizer, problem, instruction)
        likelihoods = log_likelihoods(model, tokenizer, prompt, candidates)
        best = max(likelihoods)
        for name, steps in zip(names, per_prm):
            alone = [aggregate(s, args.aggregation) for s in steps]
            products_scores = [
                [product_of_experts(a, ll - best, *product) for a, ll in zip(alone, likelihoods)]
                for product in products
            ]
            for mode, scores in zip(modes, [alone, *products_scores]):
                outcomes.append(
                    {
                        "strategy": f"{name} | {mode}",
                        "n": args.n,
                        "problem_id": record["problem_id"],
                        "correct": pick(candidates, scores),
                    }
                )

    rows = []
    for name in names:
        row = {"scorer": name}
        for mode in modes:
            mine = [o["correct"] for o in outcomes if o["strategy"] == f"{name} | {mode}"]
            row[mode] = sum(mine) / len(mine)
            base = (f"{names[0]} | {mode}", args.n)
            row[f"{mode} vs first"] = paired(outcomes, (f"{name} | {mode}", args.n), base)
        rows.append(row)
    print(f"{args.strategy} at n={args.n}, {len(records)} problems of {records[0]['dataset']}")
    print("| scorer | weighted by | accuracy | paired vs the first scorer |")
    print("| --- | --- | ---: | --- |")
    for r in rows:
        for mode in modes:
            versus = r[f"{mode} vs first"]
            low, high = versus["ci95"]
            print(
                f"| {r['scorer']} | {mode} | {r[mode]:.3f} "
                f"| {versus['difference']:+.3f} [{low:+.3f}, {high:+.3f}] |"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "run": str(args.run),
                "strategy": args.strategy,
                "n": args.n,
                "dataset": records[0]["dataset"],
                "problems": len(records),
                "aggregation": args.aggregation,
                "products": [list(p) for p in products],
                "rows": rows,
            },
            indent=2,
            default=float,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
