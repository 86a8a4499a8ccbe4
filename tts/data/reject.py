"""`tts data reject`: a rejection-sampled SFT set, as DeepSeek-R1 built its reasoning data.

For each problem, sample `n` candidates with any strategy (plain sampling by default; beam, DVTS
or MCTS with a PRM), verify each against the gold answer with `tts.verifiers`, and keep the
correct ones that pass the filters of `tts.data.filters`, at most `keep` per problem. Each
candidate is removed by the first filter it fails, in the order of `FILTERS`, so the counts of
the summary add up to the candidates sampled. DeepSeek-AI (2025), "DeepSeek-R1", Sec. 2.3.3:
"we perform rejection sampling ... retain only the correct responses".
"""

from __future__ import annotations

import random
from typing import Any

from pydantic import Field

from tts.data.filters import (
    KeepBy,
    choose,
    has_think_block,
    jaccard,
    normalized,
    repetition_rate,
    shingles,
)
from tts.data.job import Job, SamplingJobConfig, count_table, sample
from tts.data.problem import Problem
from tts.data.units import Context, UnitOutput
from tts.prompts import problem_messages
from tts.search import Candidate
from tts.seeds import derive_seed

FILTERS = (
    "no_answer",  # no final answer could be extracted
    "incorrect",  # the final answer is not the gold one
    "truncated",  # cut at the token budget
    "too_short",  # fewer than min_length tokens
    "too_long",  # more than max_length tokens
    "no_think",  # the format asks for a <think> block and it is missing
    "repetitive",  # n-gram repetition rate above max_repetition
    "duplicate",  # the same text (up to whitespace) as a completion kept before it
    "near_duplicate",  # word n-gram Jaccard similarity >= max_overlap with one kept before it
    "over_keep",  # fit, but beyond the `keep` chosen for the problem
)


class RejectConfig(SamplingJobConfig):
    keep: int = Field(4, ge=1, description="most completions kept per problem")
    keep_by: KeepBy = Field("shortest", description="which to keep: shortest, random or diverse")
    min_length: int = Field(0, ge=0, description="fewest tokens in a kept completion")
    max_length: int | None = Field(None, ge=1, description="most tokens in a kept completion")
    max_repetition: float = Field(
        0.1, ge=0, le=1, description="highest n-gram repetition rate kept (Yeo et al., 2025)"
    )
    repetition_ngram: int = Field(40, ge=1, description="tokens per n-gram of the repetition rate")
    max_overlap: float = Field(
        0.8, gt=0, le=1, description="near duplicates: word 4-gram Jaccard similarity from here"
    )
    think: bool = Field(False, description="require a <think>...</think> block before the answer")


def first_failure(
    candidate: Candidate, correct: bool, config: RejectConfig, tokenizer: Any
) -> str | None:
    """The first filter of `FILTERS` (up to `repetitive`) that `candidate` fails, or None."""
    if candidate.answer is None:
        return "no_answer"
    if not correct:
        return "incorrect"
    if candidate.finish_reason == "length":
        return "truncated"
    if candidate.tokens < config.min_length:
        return "too_short"
    if config.max_length is not None and candidate.tokens > config.max_length:
        return "too_long"
    if config.think and not has_think_block(candidate.text):
        return "no_think"
    token_ids = tokenizer.encode(candidate.text, add_special_tokens=False)
    if repetition_rate(token_ids, config.repetition_ngram) > config.max_repetition:
        return "repetitive"
    return None


async def process(problem: Problem, config: RejectConfig, context: Context) -> UnitOutput:
    candidates, correct = await sample(problem, config, context)
    removed = dict.fromkeys(FILTERS, 0)
    fit: list[int] = []  # indices of candidates that passed every filter so far
    texts: set[str] = set()
    shingle_sets: dict[int, frozenset] = {}
    for i, (candidate, ok) in enumerate(zip(candidates, correct)):
        reason = first_failure(candidate, ok, config, context.backend.tokenizer)
        if reason is None:
            shingle_sets[i] = shingles(candidate.text)
            if normalized(candidate.text) in texts:
                reason = "duplicate"
            elif any(jaccard(shingle_sets[i], shingle_sets[j]) >= config.max_overlap for j in fit):
                reason = "near_duplicate"
        if reason is not None:
            removed[reason] += 1
            continue
        fit.append(i)
        texts.add(normalized(candidate.text))
    rng = random.Random(derive_seed(config.seed, problem.id, "keep"))
    picked = choose(
        [candidates[i].tokens for i in fit],
        [shingle_sets[i] for i in fit],
        config.keep,
        config.keep_by,
        rng,
    )
    kept = [fit[j] for j in picked]
    removed["over_keep"] = len(fit) - len(kept)
    pass_rate = sum(correct) / len(candidates) if candidates else 0.0
    messages = problem_messages(problem.problem, config.instruction)
    records = [
        {
            "messages": messages + [{"role": "assistant", "content": candidates[i].text}],
            "meta": {
                "id": f"{problem.id}/{i}",
                "problem_id": problem.id,
                "dataset": config.dataset,
                "gold": problem.answer,
                "answer": candidates[i].answer,
                "pass_rate": pass_rate,
                "tokens": candidates[i].tokens,
                "model": config.model,
                "strategy": config.label,
                "seed": config.seed,
            },
        }
        for i in kept
    ]
    stats = {"sampled": len(candidates), "correct": sum(correct), "removed": removed}
    return UnitOutput(records, stats | {"kept": len(kept)})


def summarize(config: RejectConfig, stats: list[dict[str, Any]]) -> list[str]:
    sampled = sum(s["sampled"] for s in stats)
    correct = sum(s["correct"] for s in stats)
    kept = sum(s["kept"] for s in stats)
    counts = {name: sum(s["removed"][name] for s in stats) for name in FILTERS}
    rate = correct / sampled if sampled else 0.0
    lines = [
        f"{len(stats)} problems, {sampled:,} completions sampled with {config.label}, "
        f"{correct:,} correct (pass rate {rate:.3f}); {kept:,} kept",
        f"problems with at least one kept completion: {sum(s['kept'] > 0 for s in stats)}",
    ]
    return lines + count_table("completions by outcome:", counts | {"kept": kept}, "sampled")


def problem_of(record: dict[str, Any]) -> str:
    return record["meta"]["problem_id"]


JOB = Job("reject", RejectConfig, process, summarize, problem_of)
