"""Synthetic verifiable reasoning tasks: seeded generators, two trace styles, step checkers.

Tasks: `arith` (evaluate an integer expression one operation at a time; see `arith.py`).
Problem i of (task, difficulty, split, seed) is a pure function of those: training data and
eval sets never depend on how many problems were made before, and the "eval" split draws from
its own seed stream, so no eval problem is a training problem of any seed.

Trace styles (the long-vs-short comparison of Yeo et al., 2025):
- short: the steps, separated by blank lines, then `The answer is \\boxed{N}.`;
- long: `<think>` first, where the model works step by step and, at rate `error_rate`, makes a
  slip, notices it ("Wait, ..."), and redoes the step; then `</think>` and the short solution.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from tts.data.datasets import Problem
from tts.data.jsonl import RecordWriter, read_records
from tts.data.synthetic import arith
from tts.errors import TTSError
from tts.search.base import problem_messages

TASKS = {"arith": arith}
Style = Literal["short", "long"]
EVAL_SIZE = 200  # problems per eval set unless the spec says otherwise


@dataclass
class SynthProblem:
    id: str
    problem: str
    answer: str
    task: str
    difficulty: int
    expression: arith.Expression


def make_problem(task: str, difficulty: int, index: int, seed: int = 0, split: str = "train"):
    """Problem `index` of (task, difficulty, split, seed)."""
    module = _task(task, difficulty)
    rng = random.Random(f"{task}:{difficulty}:{split}:{seed}:{index}")
    expression = module.generate(rng, difficulty)
    return SynthProblem(
        id=f"synth-{task}-{difficulty}-{split}-{seed}-{index}",
        problem=module.problem_text(expression),
        answer=str(expression.value()),
        task=task,
        difficulty=difficulty,
        expression=expression,
    )


def trace(problem: SynthProblem, style: Style, error_rate: float = 0.3, seed: int = 0) -> str:
    """A worked solution of `problem` in `style` (see the module docstring)."""
    steps = arith.solution_steps(problem.expression)
    short = "\n\n".join(steps + [f"The answer is \\boxed{{{problem.answer}}}."])
    if style == "short":
        return short
    rng = random.Random(f"trace:{problem.id}:{seed}")
    thoughts, expression = [], problem.expression
    for step in steps:
        if rng.random() < error_rate:
            a, op, b, result, _ = expression.reduce()
            thoughts.append(arith.wrong_step(rng, expression))
            thoughts.append(
                f"Wait, {a} {op} {b} is not that. Let me redo it: {a} {op} {b} = {result}."
            )
        thoughts.append(step)
        expression = expression.reduce()[-1]
    thoughts.append(f"So the value is {problem.answer}.")
    return "<think>\n" + "\n\n".join(thoughts) + "\n</think>\n\n" + short


def write_sft(
    path: str | Path,
    task: str,
    difficulty: int,
    n: int,
    style: Style,
    seed: int = 0,
    error_rate: float = 0.3,
) -> int:
    """Append problems 0..n-1 of (task, difficulty, seed) with their traces to `path` in the SFT
    format, skipping those already there (so a stopped run resumes); return how many were new."""
    if n < 1:
        raise TTSError(f"n must be >= 1, got {n}")
    if not 0 <= error_rate <= 1:
        raise TTSError(f"error_rate must be in [0, 1], got {error_rate}")
    _task(task, difficulty)
    done = {record["meta"]["id"] for record in read_records(path)}
    written = 0
    with RecordWriter(path) as writer:
        for index in tqdm(range(n), desc=f"synth {task}:{difficulty}", unit="problem"):
            problem = make_problem(task, difficulty, index, seed)
            if problem.id in done:
                continue
            answer = {"role": "assistant", "content": trace(problem, style, error_rate, seed)}
            meta = {"task": task, "difficulty": difficulty, "style": style, "seed": seed}
            meta |= {"id": problem.id, "answer": problem.answer}
            writer.write({"messages": problem_messages(problem.problem) + [answer], "meta": meta})
            written += 1
    return written


def eval_set(task: str, difficulty: int, size: int = EVAL_SIZE) -> list[Problem]:
    """The fixed eval problems of a task and difficulty (`--dataset synth:TASK:D[:SIZE]`)."""
    if size < 1:
        raise TTSError(f"an eval set needs at least 1 problem, got {size}")
    problems = [make_problem(task, difficulty, i, split="eval") for i in range(size)]
    return [
        Problem(p.id, p.problem, p.answer, {"task": task, "difficulty": difficulty})
        for p in problems
    ]


def _task(task: str, difficulty: int):
    if task not in TASKS:
        raise TTSError(f"unknown synthetic task {task!r}; choose from {', '.join(TASKS)}")
    module = TASKS[task]
    if difficulty not in module.DIFFICULTIES:
        levels = f"{min(module.DIFFICULTIES)}-{max(module.DIFFICULTIES)}"
        raise TTSError(f"difficulty {difficulty} is out of range for {task} ({levels})")
    return module
