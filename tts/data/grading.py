"""Whether a final answer is right for its problem: the one grade that benchmarks, data jobs,
RL rewards and training evaluations all use.

Most problems are graded by `tts.verifiers.is_correct` against their gold answer. A synthetic
task whose answers `math_equal` cannot judge brings its own checker: a countdown answer is an
expression that must reach the target from the given numbers, and the bare target (or any
other expression of the same value) equals the gold expression without solving anything.
"""

from __future__ import annotations

from collections.abc import Callable

from tts.data.problem import Problem
from tts.data.synthetic import countdown
from tts.verifiers import is_correct

ANSWER_CHECKERS: dict[str, Callable[[str, str], bool]] = {"countdown": countdown.check_answer}


def grade_answer(problem: Problem, answer: str | None) -> bool:
    """Is `answer` (an extracted final answer; None is wrong) right for `problem`? Problems
    whose metadata names a task in `ANSWER_CHECKERS` use that checker, every other one
    `is_correct` against `problem.answer`."""
    if answer is None:
        return False
    task = problem.metadata.get("task")
    checker = ANSWER_CHECKERS.get(task) if isinstance(task, str) else None
    return checker(problem.problem, answer) if checker else is_correct(answer, problem.answer)
