"""`tts data pairs`: long-to-short preference pairs for DPO, in TRL's preference format.

Kimi k1.5's long2short preference optimisation (Kimi Team, 2025, Sec. 2.4): sample several
responses per problem, take "the shortest correct solution as the positive sample while longer
responses are treated as negative samples, including both wrong longer responses and correct
longer responses (1.5 times longer than the chosen)". Here an incorrect response may be
rejected whatever its length (the longest first), so that a model whose solutions all have one
length still gets correct-over-incorrect pairs. Records are conversational:
`{"prompt": [user message], "chosen": [assistant message], "rejected": [assistant message]}`,
which TRL's DPOTrainer reads as is, plus `meta`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from tts.data.job import Job, SamplingJobConfig, count_table, sample
from tts.data.problem import Problem
from tts.data.units import Context, UnitOutput
from tts.prompts import problem_messages


class PairsConfig(SamplingJobConfig):
    rejected: Literal["longer", "incorrect", "both"] = Field(
        "both", description="what may be rejected: longer correct, incorrect, or both"
    )
    min_ratio: float = Field(
        1.5, ge=1, description="a correct rejected is at least this many times the chosen's length"
    )
    pairs_per_problem: int = Field(1, ge=1, description="most pairs per problem, longest first")


def pick_pairs(
    lengths: list[int],
    correct: list[bool],
    finished: list[bool],
    texts: list[str],
    config: PairsConfig,
) -> tuple[int | None, list[int]]:
    """The chosen candidate (the shortest correct one that finished, ties: earliest; None if
    there is none) and the rejected ones paired with it, longest first, distinct texts."""
    winners = [i for i, ok in enumerate(correct) if ok and finished[i]]
    if not winners:
        return None, []
    chosen = min(winners, key=lambda i: (lengths[i], i))
    longer_ok = config.rejected != "incorrect"
    incorrect_ok = config.rejected != "longer"
    pool = [
        i
        for i, ok in enumerate(correct)
        if (ok and longer_ok and lengths[i] >= config.min_ratio * lengths[chosen])
        or (not ok and incorrect_ok)
    ]
    seen, rejected = {texts[chosen]}, []
    for i in sorted(pool, key=lambda i: (-lengths[i], i)):
        if texts[i] not in seen and len(rejected) < config.pairs_per_problem:
            seen.add(texts[i])
            rejected.append(i)
    return chosen, rejected


async def process(problem: Problem, config: PairsConfig, context: Context) -> UnitOutput:
    candidates, correct = await sample(problem, config, context)
    stats = {"sampled": len(candidates), "correct": sum(correct)}
    lengths = [c.tokens for c in candidates]
    finished = [c.finish_reason == "stop" for c in candidates]
    texts = [c.text for c in candidates]
    chosen, rejected = pick_pairs(lengths, correct, finished, texts, config)
    if chosen is None:
        return UnitOutput([], stats | {"pairs": 0, "longer": 0, "missing": "no_correct"})
    shortest = lengths[chosen]
    prompt = problem_messages(problem.problem, config.instruction)
    records = [
        {
            "prompt": prompt,
            "chosen": [{"role": "assistant", "content": candidates[chosen].text}],
            "rejected": [{"role": "assistant", "content": candidates[i].text}],
            "meta": {
                "id": f"{problem.id}/{chosen}-{i}",
                "problem_id": problem.id,
                "dataset": config.dataset,
                "gold": problem.answer,
                "chosen_tokens": shortest,
                "rejected_tokens": candidates[i].tokens,
                "rejected_correct": correct[i],
                "model": config.model,
                "strategy": config.label,
                "seed": config.seed,
            },
        }
        for i in rejected
    ]
    missing = None if records else "no_rejected"
    longer = sum(correct[i] for i in rejected)
    return UnitOutput(
        records, stats | {"pairs": len(records), "longer": longer, "missing": missing}
    )


def summarize(config: PairsConfig, stats: list[dict[str, Any]]) -> list[str]:
    pairs = sum(s["pairs"] for s in stats)
    counts = {
        "with pairs": sum(s["pairs"] > 0 for s in stats),
        "no correct completion": sum(s["missing"] == "no_correct" for s in stats),
        "nothing to reject": sum(s["missing"] == "no_rejected" for s in stats),
    }
    sampled = sum(s["sampled"] for s in stats)
    longer = sum(s["longer"] for s in stats)
    head = [
        f"{pairs:,} pairs from {len(stats)} problems ({sampled:,} completions, {config.label})",
        f"rejected: {longer:,} longer correct, {pairs - longer:,} incorrect",
    ]
    return head + count_table("problems:", counts, "problems")


def problem_of(record: dict[str, Any]) -> str:
    return record["meta"]["problem_id"]


JOB = Job("pairs", PairsConfig, process, summarize, problem_of)
