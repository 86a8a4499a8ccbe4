"""`tts data shepherd`: process labels without humans, by Math-Shepherd's estimation.

Wang et al. (2024), "Math-Shepherd: Verify and Reinforce LLMs Step-by-step without Human
Annotations", Sec. 3.3: a step is as good as its potential to reach the right answer. For each
of `n` sampled solutions of a problem, split into steps at the step delimiter, and for each step
sample `k` completions from the solution up to and including it; with `j` of them reaching the
gold answer,

    hard estimation:  y_HE = 1 if j > 0 else 0        (eq. 4)
    soft estimation:  y_SE = j / k                    (eq. 5)

The last step's label is the solution's own correctness (it already holds the final answer).
Solutions cut at the token budget have no final answer and are skipped.

Every step prefix extends the one before it, so the steps of one solution run one after
another: each asks the backend for the previous prefix plus one step, which its prefix cache
serves from the blocks the last request left. The summary reports the share of the step
completions' prompt tokens that came from the cache.

Records are TRL's stepwise-supervision format, `{"prompt", "completions": [step, ...],
"labels": [bool, ...]}`, plus the soft scores as `scores` and `meta`. On a synthetic task
(`--dataset synth:...`) `meta.checker` holds the task's own verdict on each step (right, with
every step before it right), and the summary reports how often the labels agree with it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import Field

from tts.data.datasets import Problem
from tts.data.job import Context, Job, JobConfig, ProblemOutput, grade
from tts.data.synthetic import TASKS, check_step
from tts.engine import SamplingParams
from tts.search.base import DEFAULT_INSTRUCTION, Usage, build_prompt, derive_seed
from tts.verifiers import extract_answer


class ShepherdConfig(JobConfig):
    n: int = Field(4, ge=1, description="solutions sampled and labelled per problem")
    k: int = Field(8, ge=1, description="completions sampled after each step to label it")
    step_delimiter: str = Field("\n\n", min_length=1, description="text that ends a step")
    max_steps: int = Field(40, ge=1, description="solutions with more steps are skipped")
    instruction: str = Field(DEFAULT_INSTRUCTION, description="appended to the problem")

    def sampling(self, n: int, *seed_parts: object) -> SamplingParams:
        return SamplingParams(
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=self.max_tokens,
            n=n,
            seed=derive_seed(self.seed, *seed_parts),
        )


def split_steps(text: str, delimiter: str) -> list[str]:
    """The steps of a solution: the pieces between delimiters, blank ones dropped."""
    return [step for step in text.split(delimiter) if step.strip()]


def checker_labels(problem: Problem, steps: list[str], correct: bool) -> list[bool] | None:
    """The synthetic task's verdict on each step (None for other datasets): a step is right
    when it and every step before it are valid moves; the last step is right when every step
    before it is and the final answer is correct."""
    if problem.metadata.get("task") not in TASKS:
        return None
    labels = [check_step(problem, steps[:i], steps[i]) for i in range(len(steps) - 1)]
    return labels + [all(labels) and correct]


async def label_steps(
    problem: Problem,
    prompt: str,
    index: int,
    steps: list[str],
    config: ShepherdConfig,
    context: Context,
    usage: Usage,
) -> tuple[list[bool], list[float]]:
    """Hard and soft estimates of every step but the last of solution `index`."""
    hard, soft = [], []
    for i in range(len(steps) - 1):
        so_far = "".join(step + config.step_delimiter for step in steps[: i + 1])
        completions = await context.backend.generate(
            prompt + so_far, config.sampling(config.k, problem.id, index, i)
        )
        usage.add(completions)
        answers = [extract_answer(so_far + c.text) for c in completions]
        reached = sum(await grade(answers, problem.answer))
        hard.append(reached > 0)
        soft.append(reached / len(completions))
    return hard, soft


async def process(problem: Problem, config: ShepherdConfig, context: Context) -> ProblemOutput:
    prompt = build_prompt(context.backend.tokenizer, problem.problem, config.instruction)
    solutions = await context.backend.generate(prompt, config.sampling(config.n, problem.id))
    correct = await grade([extract_answer(s.text) for s in solutions], problem.answer)
    usage = Usage()
    stats = {"solutions": len(solutions), "truncated": 0, "too_many_steps": 0}
    chosen = []
    for index, solution in enumerate(solutions):
        steps = split_steps(solution.text, config.step_delimiter)
        if solution.finish_reason != "stop" or not steps:
            stats["truncated"] += 1
        elif len(steps) > config.max_steps:
            stats["too_many_steps"] += 1
        else:
            chosen.append((index, steps))
    estimates = await asyncio.gather(
        *(label_steps(problem, prompt, i, steps, config, context, usage) for i, steps in chosen)
    )
    records = []
    for (index, steps), (hard, soft) in zip(chosen, estimates):
        ok = correct[index]
        meta = {
            "problem_id": problem.id,
            "dataset": config.dataset,
            "gold": problem.answer,
            "answer": extract_answer(solutions[index].text),
            "correct": ok,
            "k": config.k,
            "model": config.model,
            "seed": config.seed,
        }
        checker = checker_labels(problem, steps, ok)
        if checker is not None:
            meta["checker"] = checker
        records.append(
            {
                "id": f"{problem.id}/{index}",
                "prompt": problem.problem,
                "completions": steps,
                "labels": hard + [ok],
                "scores": soft + [float(ok)],
                "meta": meta,
            }
        )
    stats |= {
        "labelled": len(records),
        "steps": sum(len(r["labels"]) for r in records),
        "positive": sum(sum(r["labels"]) for r in records),
        "soft_sum": sum(sum(r["scores"]) for r in records),
        "prompt_tokens": usage.prompt_tokens,
        "cached_tokens": usage.cached_tokens,
        "agreement": agreement(records),
    }
    return ProblemOutput(records, stats)


def agreement(records: list[dict[str, Any]]) -> dict[str, int] | None:
    """Counts of the intermediate steps (those labelled by completions) by checker verdict and
    label: `right_hard_wrong` is a step the checker calls right that hard estimation labelled
    wrong; `soft_agree` counts steps where soft score >= 0.5 matches the checker."""
    if not records or "checker" not in records[0]["meta"]:
        return None
    counts = dict.fromkeys(
        ["right_hard_right", "right_hard_wrong", "wrong_hard_right", "wrong_hard_wrong"], 0
    )
    counts["soft_agree"] = 0
    for record in records:
        pairs = zip(record["meta"]["checker"][:-1], record["labels"], record["scores"])
        for truth, label, score in pairs:
            counts[f"{'right' if truth else 'wrong'}_hard_{'right' if label else 'wrong'}"] += 1
            counts["soft_agree"] += (score >= 0.5) == truth
    return counts


def summarize(config: ShepherdConfig, stats: list[dict[str, Any]]) -> list[str]:
    total = {key: sum(s[key] for s in stats) for key in stats[0] if key != "agreement"}
    lines = [
        f"{len(stats)} problems, {total['solutions']:,} solutions sampled; "
        f"{total['labelled']:,} labelled ({total['truncated']:,} truncated, "
        f"{total['too_many_steps']:,} with over {config.max_steps} steps skipped)",
        f"{total['steps']:,} steps at k={config.k}: {_share(total['positive'], total['steps'])} "
        f"labelled right by hard estimation, mean soft score "
        f"{_share(total['soft_sum'], total['steps'])}",
        f"prefix cache: {total['cached_tokens']:,} of {total['prompt_tokens']:,} prompt tokens of "
        f"the step completions served from cache "
        f"({_share(total['cached_tokens'], total['prompt_tokens'])})",
    ]
    checked = [s["agreement"] for s in stats if s["agreement"] is not None]
    if checked:
        c = {key: sum(a[key] for a in checked) for key in checked[0]}
        right = c["right_hard_right"] + c["right_hard_wrong"]
        wrong = c["wrong_hard_right"] + c["wrong_hard_wrong"]
        agree = c["right_hard_right"] + c["wrong_hard_wrong"]
        checked_steps = right + wrong
        lines += [
            f"agreement with the task's step checker on {checked_steps:,} intermediate steps: "
            f"hard {_share(agree, checked_steps)}, "
            f"soft >= 0.5 {_share(c['soft_agree'], checked_steps)}",
            f"  steps wrong by the checker labelled wrong: {c['wrong_hard_wrong']:,} of {wrong:,} "
            f"({_share(c['wrong_hard_wrong'], wrong)}); right steps labelled wrong: "
            f"{c['right_hard_wrong']:,} of {right:,} ({_share(c['right_hard_wrong'], right)})",
        ]
    return lines


def _share(part: float, whole: float) -> str:
    return f"{part / whole:.3f}" if whole else "n/a"


def problem_of(record: dict[str, Any]) -> str:
    return record["meta"]["problem_id"]


JOB = Job("shepherd", ShepherdConfig, process, summarize, problem_of)
