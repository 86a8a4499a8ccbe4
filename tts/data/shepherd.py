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

`--estimation binary` gets the same hard labels for a fraction of the completions, by the
binary search of OmegaPRM (Luo et al., 2024, "Improve Mathematical Reasoning in Language Models
by Automated Process Supervision", Sec. 3.2): a prefix that can reach the gold answer stays able
to when cut shorter, so the hard labels of a solution are good up to its first bad step and bad
from there on. A correct solution is itself a completion that reaches the gold answer from every
one of its prefixes, so all its steps are good at no cost; for an incorrect one, a binary search
over its steps finds the first prefix from which none of `k` completions reaches the gold
answer, in about log2(steps) probes instead of one per step. It writes no soft scores (only the
probed steps have one).

`--estimation outcome` samples no completions: only the last step is labelled, by the
solution's correctness, and the others are left unlabelled (null), which the PRM trainer
skips. These are an outcome reward model's labels (Cobbe et al., 2021, "Training Verifiers to
Solve Math Word Problems"), the cheapest any task with a final answer gives; an implicit PRM
trained on them still scores every step (Yuan et al., 2024, "Free Process Rewards without
Process Labels").

`--estimation checker` (synthetic tasks only) labels every step but the last (which, as in every
mode, the solution's correctness labels) by the task's own step checker and samples no
completions: the analogue of human process labels (PRM800K's), which no real
task gives for free. A PRM trained on them is the upper bound of what better labels can buy.

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
from typing import Any, Literal

from pydantic import Field

from tts.data.job import Job, JobConfig, grade
from tts.data.problem import Problem
from tts.data.synthetic import TASKS, check_step
from tts.data.units import Context, UnitOutput
from tts.engine import SamplingParams
from tts.errors import TTSError
from tts.prompts import DEFAULT_INSTRUCTION, build_prompt
from tts.search.base import Usage
from tts.seeds import derive_seed
from tts.verifiers import extract_answer


class ShepherdConfig(JobConfig):
    n: int = Field(4, ge=1, description="solutions sampled and labelled per problem")
    k: int = Field(8, ge=1, description="completions sampled after each step to label it")
    estimation: Literal["full", "binary", "outcome", "checker"] = Field(
        "full",
        description="label every step (hard and soft), binary-search the first bad one, "
        "label only the last step by the outcome, or (synthetic tasks) by the step checker",
    )
    step_delimiter: str = Field("\n\n", min_length=1, description="text that ends a step")
    max_steps: int = Field(40, ge=1, description="solutions with more steps are skipped")
    instruction: str = Field(DEFAULT_INSTRUCTION, description="appended to the problem")

    def sampling_params(self, n: int, *seed_parts: object) -> SamplingParams:
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


async def reaches_gold(
    problem: Problem,
    prompt: str,
    index: int,
    steps: list[str],
    i: int,
    config: ShepherdConfig,
    context: Context,
    usage: Usage,
) -> float:
    """The share of `k` completions from solution `index` up to and including step `i` that
    reach the gold answer."""
    so_far = "".join(step + config.step_delimiter for step in steps[: i + 1])
    completions = await context.backend.generate(
        prompt + so_far, config.sampling_params(config.k, problem.id, index, i)
    )
    usage.add(completions)
    answers = [extract_answer(so_far + c.text) for c in completions]
    return sum(await grade(answers, problem)) / len(completions)


async def label_steps(
    problem: Problem,
    prompt: str,
    index: int,
    steps: list[str],
    correct: bool,
    config: ShepherdConfig,
    context: Context,
    usage: Usage,
) -> tuple[list[bool | None], list[float] | None]:
    """Hard labels of every step but the last of solution `index` (None: unlabelled, with
    outcome estimation), and the soft ones (None unless full estimation)."""
    intermediate = len(steps) - 1
    if config.estimation == "outcome":
        return [None] * intermediate, None
    if config.estimation == "checker":
        return checker_labels(problem, steps, correct)[:-1], None
    if config.estimation == "full":
        soft = [
            await reaches_gold(problem, prompt, index, steps, i, config, context, usage)
            for i in range(intermediate)
        ]
        return [share > 0 for share in soft], soft
    first_bad = intermediate
    if not correct:
        low, high = 0, intermediate  # the first bad step is in [low, high]
        while low < high:
            middle = (low + high) // 2
            if await reaches_gold(problem, prompt, index, steps, middle, config, context, usage):
                low = middle + 1
            else:
                high = middle
        first_bad = low
    return [i < first_bad for i in range(intermediate)], None


async def process(problem: Problem, config: ShepherdConfig, context: Context) -> UnitOutput:
    if config.estimation == "checker" and problem.metadata.get("task") not in TASKS:
        raise TTSError(
            f"--estimation checker needs a synthetic task's step checker; {problem.id} has none "
            "(use full, binary or outcome)"
        )
    prompt = build_prompt(context.backend.tokenizer, problem.problem, config.instruction)
    solutions = await context.backend.generate(prompt, config.sampling_params(config.n, problem.id))
    correct = await grade([extract_answer(s.text) for s in solutions], problem)
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
        *(
            label_steps(problem, prompt, i, steps, correct[i], config, context, usage)
            for i, steps in chosen
        )
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
        record = {
            "id": f"{problem.id}/{index}",
            "prompt": problem.problem,
            "completions": steps,
            "labels": hard + [ok],
        }
        if soft is not None:
            record["scores"] = soft + [float(ok)]
        records.append(record | {"meta": meta})
    stats |= {
        "labelled": len(records),
        "steps": sum(label is not None for r in records for label in r["labels"]),
        "positive": sum(label is True for r in records for label in r["labels"]),
        "soft_sum": sum(sum(r.get("scores", [])) for r in records),
        "completion_tokens": usage.completion_tokens,
        "prompt_tokens": usage.prompt_tokens,
        "cached_tokens": usage.cached_tokens,
        "agreement": agreement(records),
    }
    return UnitOutput(records, stats)


def agreement(records: list[dict[str, Any]]) -> dict[str, int] | None:
    """Counts of the intermediate steps (those labelled by completions) by checker verdict and
    label: `right_hard_wrong` is a step the checker calls right that hard estimation labelled
    wrong; `soft_agree` counts steps where soft score >= 0.5 matches the checker (0 without
    soft scores)."""
    if not records or "checker" not in records[0]["meta"]:
        return None
    counts = dict.fromkeys(
        ["right_hard_right", "right_hard_wrong", "wrong_hard_right", "wrong_hard_wrong"], 0
    )
    counts["soft_agree"] = 0
    for record in records:
        checker = record["meta"]["checker"][:-1]
        for truth, label in zip(checker, record["labels"]):
            if label is None:
                continue
            counts[f"{'right' if truth else 'wrong'}_hard_{'right' if label else 'wrong'}"] += 1
        for truth, score in zip(checker, record.get("scores", [])):
            counts["soft_agree"] += (score >= 0.5) == truth
    return counts


def summarize(config: ShepherdConfig, stats: list[dict[str, Any]]) -> list[str]:
    total = {key: sum(s[key] for s in stats) for key in stats[0] if key != "agreement"}
    soft = {
        "full": f", mean soft score {_share(total['soft_sum'], total['steps'])}",
        "binary": " (binary search for the first bad step)",
        "outcome": " (outcome labels: the last step of each solution only)",
        "checker": " (the task's step checker)",
    }[config.estimation]
    lines = [
        f"{len(stats)} problems, {total['solutions']:,} solutions sampled; "
        f"{total['labelled']:,} labelled ({total['truncated']:,} truncated, "
        f"{total['too_many_steps']:,} with over {config.max_steps} steps skipped)",
        f"{total['steps']:,} steps at k={config.k}: {_share(total['positive'], total['steps'])} "
        f"labelled right by hard estimation{soft}",
        f"step completions: {total['completion_tokens']:,} tokens generated; prefix cache: "
        f"{total['cached_tokens']:,} of {total['prompt_tokens']:,} prompt tokens served from "
        f"cache ({_share(total['cached_tokens'], total['prompt_tokens'])})",
    ]
    checked = [s["agreement"] for s in stats if s["agreement"] is not None]
    if config.estimation in ("outcome", "checker"):
        checked = []  # no intermediate step labelled, or labelled by the checker itself
    if checked:
        c = {key: sum(a[key] for a in checked) for key in checked[0]}
        right = c["right_hard_right"] + c["right_hard_wrong"]
        wrong = c["wrong_hard_right"] + c["wrong_hard_wrong"]
        agree = c["right_hard_right"] + c["wrong_hard_wrong"]
        checked_steps = right + wrong
        soft_agree = (
            f", soft >= 0.5 {_share(c['soft_agree'], checked_steps)}"
            if config.estimation == "full"
            else ""
        )
        lines += [
            f"agreement with the task's step checker on {checked_steps:,} intermediate steps: "
            f"hard {_share(agree, checked_steps)}{soft_agree}",
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
