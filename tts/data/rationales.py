"""`tts data rationales`: one STaR iteration's training data (Zelikman et al., 2022, "STaR:
Bootstrapping Reasoning With Reasoning", Algorithm 1).

For each problem, sample `n` rationales with any strategy and keep up to `keep` whose final
answer is right (not cut at the token budget). With `rationalize`, a problem none of them
solves is posed again with its answer as a hint (`hint`, the problem followed by the hint, as
STaR's rationalization adds the answer to the question) and the right rationales of that pass
are kept instead, unless they mention the hint (a rationale that cites it teaches the model to
cite a hint it will not have). Every record poses the problem without the hint: the model
learns to reach the answer unaided, which is what rationalization is for.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pydantic import Field

from tts.data.job import Job, SamplingJobConfig, count_table, sample
from tts.data.problem import Problem
from tts.data.units import Context, UnitOutput
from tts.prompts import problem_messages
from tts.search import Candidate

ANSWER = "{answer}"  # where the hint takes the gold answer


class RationalesConfig(SamplingJobConfig):
    keep: int = Field(1, ge=1, description="most rationales kept per problem (STaR keeps one)")
    rationalize: bool = Field(
        True, description="pose the unsolved problems again with the answer as a hint"
    )
    hint: str = Field(
        "Hint: the answer is {answer}.",
        description="appended to an unsolved problem after a blank line; {answer} is the gold",
    )


def hinted(problem: Problem, hint: str) -> Problem:
    """The problem posed with its answer as a hint (its own id, so its samples have their own
    seeds)."""
    text = f"{problem.problem}\n\n{hint.replace(ANSWER, problem.answer)}"
    return replace(problem, id=f"{problem.id}/hint", problem=text)


def mentions_hint(text: str, hint: str) -> bool:
    """Does a rationale refer to the hint: its first word, or the whole hint sentence?"""
    words = hint.split()
    first = words[0].rstrip(":").lower() if words else ""
    return bool(first) and first in text.lower()


def kept_rationales(
    candidates: list[Candidate], correct: list[bool], keep: int, hint: str | None
) -> list[Candidate]:
    """Up to `keep` right rationales that ran to an end (and, for a hinted pass, do not cite
    the `hint`), in sampling order."""
    kept = []
    for candidate, ok in zip(candidates, correct):
        if not ok or candidate.finish_reason == "length":
            continue
        if hint is not None and mentions_hint(candidate.text, hint):
            continue
        kept.append(candidate)
    return kept[:keep]


async def process(problem: Problem, config: RationalesConfig, context: Context) -> UnitOutput:
    candidates, correct = await sample(problem, config, context)
    kept = kept_rationales(candidates, correct, config.keep, None)
    rationalized = False
    sampled = len(candidates)
    if not kept and config.rationalize:
        candidates, correct = await sample(hinted(problem, config.hint), config, context)
        kept = kept_rationales(candidates, correct, config.keep, config.hint)
        rationalized = bool(kept)
        sampled += len(candidates)
    messages = problem_messages(problem.problem, config.instruction)
    records = [
        {
            "messages": messages + [{"role": "assistant", "content": candidate.text}],
            "meta": {
                "id": f"{problem.id}/{i}",
                "problem_id": problem.id,
                "dataset": config.dataset,
                "gold": problem.answer,
                "rationalized": rationalized,
                "tokens": candidate.tokens,
                "model": config.model,
                "strategy": config.label,
                "seed": config.seed,
            },
        }
        for i, candidate in enumerate(kept)
    ]
    stats = {"sampled": sampled, "solved": bool(kept) and not rationalized}
    return UnitOutput(records, stats | {"rationalized": rationalized, "kept": len(kept)})


def summarize(config: RationalesConfig, stats: list[dict[str, Any]]) -> list[str]:
    solved = sum(s["solved"] for s in stats)
    rationalized = sum(s["rationalized"] for s in stats)
    counts = {
        "solved": solved,
        "rationalized": rationalized,
        "unsolved": len(stats) - solved - rationalized,
    }
    lines = [
        f"{len(stats)} problems, {sum(s['sampled'] for s in stats):,} rationales sampled with "
        f"{config.label}; {sum(s['kept'] for s in stats):,} kept"
    ]
    return lines + count_table("problems:", counts, "problems")


def problem_of(record: dict[str, Any]) -> str:
    return record["meta"]["problem_id"]


JOB = Job("rationales", RationalesConfig, process, summarize, problem_of)
