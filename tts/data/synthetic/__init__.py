"""Synthetic verifiable reasoning tasks: seeded generators, two trace styles, step checkers.

Tasks (one module each, same functions: see `Task`): `arith` (evaluate an integer expression one
operation at a time) and `countdown` (reach a target from 3-6 numbers with + - * /). Difficulty
is an int from 1 to 5; each module's docstring has its table. Trace styles: see `traces.py`.

Problem i of (task, difficulty, split, seed) is a pure function of those, drawn from
`random.Random` seeded with all of them: data never depends on how many problems were made
before. Eval and training problems never coincide, whatever the seeds: the problem space is
split by a hash of each problem (`EVAL_SHARE` of it is eval), a split only draws problems from
its own part, and the eval split also has its own seed stream.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from tqdm import tqdm

from tts.data.jsonl import RecordWriter, read_records
from tts.data.problem import Problem
from tts.data.synthetic import arith, countdown
from tts.data.synthetic.traces import long_trace, short_trace
from tts.errors import TTSError
from tts.prompts import problem_messages

Style = Literal["short", "long", "search", "path"]
EVAL_SIZE = 200  # problems per eval set unless the spec says otherwise
EVAL_SHARE = 1 / 8  # of each task's problem space, kept for eval sets


class Task(Protocol):
    """What a task module provides; `instance` is the task's own problem object."""

    DIFFICULTIES: dict[int, tuple[Any, ...]]

    def generate(self, rng: random.Random, difficulty: int) -> Any: ...
    def problem_text(self, instance: Any) -> str: ...
    def key(self, instance: Any) -> str: ...  # equal for problems that are the same problem
    def gold(self, instance: Any) -> str: ...
    def boxed(self, instance: Any) -> str: ...  # the final answer as the trace writes it
    def solution_steps(self, instance: Any) -> list[str]: ...
    def thoughts(self, rng: random.Random, instance: Any, error_rate: float) -> list[str]: ...
    def check_step(self, problem: str, previous_steps: list[str], step: str) -> bool: ...


TASKS: dict[str, Task] = {"arith": arith, "countdown": countdown}


@dataclass
class SynthProblem:
    id: str
    problem: str
    answer: str
    task: str
    difficulty: int
    instance: Any


def make_problem(
    task: str, difficulty: int, index: int, seed: int = 0, split: str = "train"
) -> SynthProblem:
    """Problem `index` of (task, difficulty, split, seed)."""
    module = _task(task, difficulty)
    rng = random.Random(f"{task}:{difficulty}:{split}:{seed}:{index}")
    while True:
        instance = module.generate(rng, difficulty)
        if _is_eval(module.key(instance)) == (split == "eval"):
            break
    return SynthProblem(
        id=f"synth-{task}-{difficulty}-{split}-{seed}-{index}",
        problem=module.problem_text(instance),
        answer=module.gold(instance),
        task=task,
        difficulty=difficulty,
        instance=instance,
    )


def trace(problem: SynthProblem, style: Style, error_rate: float = 0.3, seed: int = 0) -> str:
    """A worked solution of `problem` in `style`; in the long style each step is preceded by a
    mistake and its repair with probability `error_rate`. The search style is the stream of a
    real search and the path style the path it found (tasks with a `search`: countdown)."""
    _check_rate(error_rate)
    module = TASKS[problem.task]
    if style in ("search", "path"):
        if not hasattr(module, "search"):
            raise TTSError(
                f"the {style} style needs a task with a search (countdown), not {problem.task}"
            )
        stream, path = module.search(problem.instance)
        steps = module.path_steps(problem.instance, path)
        short = short_trace(steps, module.expression(problem.instance.numbers, path))
        return short if style == "path" else long_trace(stream, short)
    short = short_trace(module.solution_steps(problem.instance), module.boxed(problem.instance))
    if style == "short":
        return short
    rng = random.Random(f"trace:{problem.id}:{seed}")
    return long_trace(module.thoughts(rng, problem.instance, error_rate), short)


def check_step(problem: SynthProblem | Problem, previous_steps: list[str], step: str) -> bool:
    """Is `step` a valid next short-CoT step after `previous_steps`? Takes a generated problem
    or one from an eval set (`load_dataset("synth:...")`)."""
    task = problem.task if isinstance(problem, SynthProblem) else problem.metadata["task"]
    return TASKS[task].check_step(problem.problem, previous_steps, step)


def write_sft(
    path: str | Path,
    task: str,
    difficulty: int,
    n: int,
    style: Style,
    seed: int = 0,
    error_rate: float = 0.3,
    max_search_lines: int | None = None,
) -> int:
    """Append problems 0..n-1 of (task, difficulty, seed) with their traces to `path` in the SFT
    format, skipping those already there (so a stopped run resumes); return how many were new.
    With `max_search_lines` (tasks with a search), the problems whose search stream is longer
    are left out, in every style, so that sets of different styles hold the same problems."""
    if n < 1:
        raise TTSError(f"n must be >= 1, got {n}")
    _check_rate(error_rate)
    module = _task(task, difficulty)
    if max_search_lines is not None and not hasattr(module, "search"):
        raise TTSError(f"max_search_lines needs a task with a search (countdown), not {task}")
    done = {record["meta"]["id"] for record in read_records(path)}
    written = 0
    with RecordWriter(path) as writer:
        for index in tqdm(range(n), desc=f"synth {task}:{difficulty}", unit="problem"):
            problem = make_problem(task, difficulty, index, seed)
            if problem.id in done:
                continue
            if max_search_lines is not None:
                stream, _ = module.search(problem.instance)
                if len(stream) > max_search_lines:
                    continue
            answer = {"role": "assistant", "content": trace(problem, style, error_rate, seed)}
            meta = {"task": task, "difficulty": difficulty, "style": style, "seed": seed}
            meta |= {"id": problem.id, "answer": problem.answer}
            writer.write({"messages": problem_messages(problem.problem) + [answer], "meta": meta})
            written += 1
    return written


def eval_set(
    task: str, difficulty: int, size: int = EVAL_SIZE, seed: int | None = None
) -> list[Problem]:
    """The fixed eval problems of a task and difficulty (`--dataset synth:TASK:D[:SIZE]`), all
    different; a smaller size gives a prefix of a larger one. A `seed` draws another eval set
    (`synth:TASK:D:SIZE:eval:SEED`), whose ids name the seed; None is the fixed one."""
    _task(task, difficulty)
    if size < 1:
        raise TTSError(f"an eval set needs at least 1 problem, got {size}")
    problems: dict[str, SynthProblem] = {}
    # Small difficulties have few distinct problems; give up rather than loop forever.
    for index in range(50 * size):
        problem = make_problem(task, difficulty, index, seed or 0, split="eval")
        problems.setdefault(problem.problem, problem)
        if len(problems) == size:
            break
    else:
        raise TTSError(f"{task} at difficulty {difficulty} has fewer than {size} eval problems")
    name = f"synth-{task}-{difficulty}" + ("" if seed is None else f"-s{seed}")
    return [
        Problem(
            f"{name}-{i}",
            p.problem,
            p.answer,
            {"task": task, "difficulty": difficulty},
        )
        for i, p in enumerate(problems.values())
    ]


def train_problems(task: str, difficulty: int, size: int, seed: int = 0) -> list[Problem]:
    """Training problems 0..size-1 of (task, difficulty, seed), as `Problem`s with the ids
    `write_sft` gives them: the problems of an SFT set, without their solutions."""
    _task(task, difficulty)
    if size < 1:
        raise TTSError(f"a problem set needs at least 1 problem, got {size}")
    made = (make_problem(task, difficulty, i, seed) for i in range(size))
    return [
        Problem(p.id, p.problem, p.answer, {"task": task, "difficulty": difficulty}) for p in made
    ]


def _is_eval(key: str) -> bool:
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < EVAL_SHARE * 2**64


def _check_rate(error_rate: float) -> None:
    if not 0 <= error_rate <= 1:
        raise TTSError(f"error_rate must be in [0, 1], got {error_rate}")


def _task(task: str, difficulty: int) -> Task:
    if task not in TASKS:
        raise TTSError(f"unknown synthetic task {task!r}; choose from {', '.join(TASKS)}")
    module = TASKS[task]
    if difficulty not in module.DIFFICULTIES:
        levels = f"{min(module.DIFFICULTIES)}-{max(module.DIFFICULTIES)}"
        raise TTSError(f"difficulty {difficulty} is out of range for {task} ({levels})")
    return module
