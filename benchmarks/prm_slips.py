"""Does a PRM spot a slipped step? Right against slipped continuations of one prefix.

    python benchmarks/prm_slips.py [--prm builtin] [--dataset synth:arith:3] [--limit 100]
        [--pairs 3]

For each `arith` problem, `--pairs` times: the right solution up to a random step, then the
right next step or the same step with a small arithmetic slip (`arith.slip_pair`: off by 1, 2
or 10, the built-in model's own kind of error). The PRM scores both; a pair is won when the
right step scores higher (ties half). This is the choice a beam search makes between two
continuations of one prefix; pooled step AUROC also rewards knowing which problems and which
positions tend to go wrong, which this check cannot. Prints the figures and writes
benchmarks/results/prm_slips.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
from pathlib import Path

from tts.data.datasets import load_dataset
from tts.data.synthetic import arith
from tts.verifiers import load_scorer


async def margins(scorer, problems, pairs: int, seed: int) -> list[float]:
    """P(good) of the right step minus that of the slipped one, for every pair."""
    rng = random.Random(seed)
    jobs = []
    for problem in problems:
        expression = arith.parse_expression(problem.problem.removeprefix("Evaluate ")[:-1])
        for _ in range(pairs):
            prefix, right, slipped = arith.slip_pair(rng, expression)
            jobs += [(problem.problem, [*prefix, right]), (problem.problem, [*prefix, slipped])]
    scores = await asyncio.gather(*(scorer.score(text, steps) for text, steps in jobs))
    return [good[-1] - bad[-1] for good, bad in zip(scores[::2], scores[1::2])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prm", default="builtin")
    parser.add_argument("--dataset", default="synth:arith:3")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--pairs", type=int, default=3, help="pairs per problem")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/prm_slips.json"))
    args = parser.parse_args()
    problems = load_dataset(args.dataset, args.limit)
    if any(p.metadata.get("task") != "arith" for p in problems):
        raise SystemExit(f"{args.dataset}: expected an arith set (synth:arith:D)")
    scorer = load_scorer(args.prm, device="cpu")
    found = asyncio.run(margins(scorer, problems, args.pairs, args.seed))
    won = sum(m > 0 for m in found) + sum(m == 0 for m in found) / 2
    result = {
        "prm": args.prm,
        "dataset": args.dataset,
        "pairs": len(found),
        "right_above_slipped": won / len(found),
        "mean_margin": sum(found) / len(found),
    }
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
