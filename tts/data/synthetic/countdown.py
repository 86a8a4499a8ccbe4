"""`countdown`: reach a target from a few numbers with + - * / (the task of Stream of Search,
Gandhi et al., 2024, and of TinyZero).

A problem gives 3-6 numbers and a target. A solution is a sequence of steps
`a op b = c, leaving ...`: each combines two numbers still available (every given number is
used at most once) into a positive integer (division only when exact) and lists what is left;
the last step's result is the target. The boxed answer is the whole solution as one expression,
`The answer is \\boxed{(8 - 3) * 6}.`: the target is in the prompt, so boxing it would grade any
guess right. `check_answer` grades it (through `tts.data.grading`, everywhere tts grades): the
expression must reach the target using only the given numbers; `math_equal` against the gold
expression would take the bare target.

Problems are made backwards: sample the numbers, combine them all in a random order with random
operations, and take the final result as the target (resampled if it is out of range, is one of
the numbers, appears before the last step, or an intermediate value exceeds 9999). Every problem
thus has the generated solution; shorter ones may exist.

`search` writes the stream of a depth-first search for a solution (the `search` trace style,
after Stream of Search), `path_steps` the path it found (the `path` style); docs/data.md has
how long the streams run at each difficulty.

Difficulty (numbers, range of the small ones, how many of 25/50/75/100, target range), and the
share that needs backtracking: the first greedy attempt (always take the step whose result is
closest to the target) misses the target. Measured on 1000 training problems of seed 0.

| difficulty | numbers | small | large | target  | greedy fails |
|------------|---------|-------|-------|---------|--------------|
| 1          | 3       | 1-9   | 0     | 10-99   | 45%          |
| 2          | 4       | 1-9   | 0     | 10-99   | 52%          |
| 3          | 4       | 1-25  | 0     | 10-99   | 63%          |
| 4          | 5       | 1-25  | 0     | 100-499 | 79%          |
| 5          | 6       | 1-10  | 2     | 100-999 | 70%          |
"""

from __future__ import annotations

import ast
import random
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

# numbers, small range, large ones, target range
DIFFICULTIES = {
    1: (3, (1, 9), 0, (10, 99)),
    2: (4, (1, 9), 0, (10, 99)),
    3: (4, (1, 25), 0, (10, 99)),
    4: (5, (1, 25), 0, (100, 499)),
    5: (6, (1, 10), 2, (100, 999)),
}
LARGE = (25, 50, 75, 100)
MAX_VALUE = 9999
_PROBLEM = re.compile(
    r"Use ([\d, ]+) to make (\d+) with \+, -, \* and /, each number at most once\."
)
_STEP = re.compile(r"(\d+) ([+\-*/]) (\d+) = (\d+), leaving (\d+(?:, \d+)*)\.")
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}
_AST_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}

Step = tuple[int, str, int, int]  # a op b = c


@dataclass(frozen=True)
class Countdown:
    """A problem and the solution it was generated from."""

    numbers: tuple[int, ...]
    target: int
    steps: tuple[Step, ...]


def combine(a: int, op: str, b: int) -> int | None:
    """a op b if it is a positive integer, else None."""
    if op == "+":
        return a + b
    if op == "*":
        return a * b
    if op == "-":
        return a - b if a > b else None
    return a // b if b and a % b == 0 else None


def moves(pool: list[int]) -> list[Step]:
    """The useful steps from `pool`, larger operand first (* 1 and / 1 change nothing)."""
    found = []
    for i in range(len(pool)):
        for j in range(i + 1, len(pool)):
            a, b = max(pool[i], pool[j]), min(pool[i], pool[j])
            for op in "+-*/":
                if b == 1 and op in "*/":
                    continue
                if (c := combine(a, op, b)) is not None:
                    found.append((a, op, b, c))
    return found


def after(pool: list[int], step: Step) -> list[int]:
    """The numbers left once `step` is taken: the unused ones in order, then its result."""
    left = list(pool)
    left.remove(step[0])
    left.remove(step[2])
    return left + [step[3]]


def generate(rng: random.Random, difficulty: int) -> Countdown:
    """A random solvable problem of this difficulty (see the module docstring)."""
    count, (low, high), large, (target_low, target_high) = DIFFICULTIES[difficulty]
    while True:
        numbers = [rng.randint(low, high) for _ in range(count - large)]
        numbers += [rng.choice(LARGE) for _ in range(large)]
        rng.shuffle(numbers)
        pool, steps = list(numbers), []
        while len(pool) > 1:
            steps.append(rng.choice(moves(pool)))
            pool = after(pool, steps[-1])
        target = pool[0]
        results = [step[3] for step in steps]
        if (
            target_low <= target <= target_high
            and target not in numbers
            and target not in results[:-1]
            and max(results) <= MAX_VALUE
        ):
            return Countdown(tuple(numbers), target, tuple(steps))


def problem_text(problem: Countdown) -> str:
    numbers = ", ".join(map(str, problem.numbers))
    return f"Use {numbers} to make {problem.target} with +, -, * and /, each number at most once."


def key(problem: Countdown) -> str:
    """The problem up to the order of its numbers, for keeping eval and training apart."""
    return f"{sorted(problem.numbers)}:{problem.target}"


def gold(problem: Countdown) -> str:
    return str(problem.target)


def step_text(step: Step, left: list[int]) -> str:
    a, op, b, c = step
    return f"{a} {op} {b} = {c}, leaving {', '.join(map(str, left))}."


def solution_steps(problem: Countdown) -> list[str]:
    """The short chain of thought: the generated solution, one step per line."""
    return path_steps(problem, list(problem.steps))


def boxed(problem: Countdown) -> str:
    """The solution as one expression with only the parentheses precedence needs."""
    return expression(problem.numbers, problem.steps)


def expression(numbers: tuple[int, ...], steps: tuple[Step, ...] | list[Step]) -> str:
    """The expression the last of `steps` computes from `numbers`, with only the parentheses
    precedence needs."""
    items = [(n, str(n), 3) for n in numbers]  # (value, text, precedence)
    for a, op, b, c in steps:
        left = next(item for item in items if item[0] == a)
        items.remove(left)
        right = next(item for item in items if item[0] == b)
        items.remove(right)
        level = _PRECEDENCE[op]
        # a - (b + c) and a / (b * c) need the parentheses; a + (b - c) and a * (b / c) do not.
        left_text = left[1] if left[2] >= level else f"({left[1]})"
        keep = right[2] > level or (right[2] == level and op in "+*")
        items.append((c, f"{left_text} {op} {right[1] if keep else f'({right[1]})'}", level))
    return items[-1][1]


def dead_end_text(pool: list[int], back: list[int]) -> str:
    return f"Dead end at {', '.join(map(str, pool))}; back to {', '.join(map(str, back))}."


def closeness(pool: list[int], target: int) -> int:
    """The search's heuristic: how far the pool's nearest number is from the target."""
    return min(abs(n - target) for n in pool)


def search(problem: Countdown) -> tuple[list[str], list[Step]]:
    """A stream of search (Gandhi et al., 2024, "Stream of Search"): the text of a depth-first
    search that tries the steps from each pool nearest-to-the-target first (the greedy attempt
    is its first path), writes every step it takes, names every dead end (a pool it has
    exhausted without reaching the target) with the pool it backtracks to, and stops at the
    target; and the path it found. A pool explored once is not entered again (a closed set: it
    was a dead end, or the search would have stopped). Its length is the search's real cost:
    the problems greedy solves take one path, the others as many steps as finding one takes."""
    target, lines = problem.target, []
    explored: set[tuple[int, ...]] = set()

    def explore(pool: list[int]) -> list[Step] | None:
        explored.add(tuple(sorted(pool)))
        if target in pool:
            return []
        children = [(move, after(pool, move)) for move in moves(pool)]
        children.sort(key=lambda child: closeness(child[1], target))
        for move, left in children:
            if tuple(sorted(left)) in explored:
                continue
            lines.append(step_text(move, left))
            found = explore(left)
            if found is not None:
                return [move, *found]
            lines.append(dead_end_text(left, pool))
        return None

    path = explore(list(problem.numbers))
    if path is None:  # generated problems are solvable by construction
        raise ValueError(f"no solution for {problem_text(problem)}")
    return lines, path


def path_steps(problem: Countdown, path: list[Step]) -> list[str]:
    """The steps of `path` from the problem's numbers, as the short chain of thought writes
    them."""
    pool, texts = list(problem.numbers), []
    for step in path:
        pool = after(pool, step)
        texts.append(step_text(step, pool))
    return texts


def thoughts(rng: random.Random, problem: Countdown, error_rate: float) -> list[str]:
    """The long chain of thought: before each step, with probability `error_rate`, a real
    mistake (a dead-end branch worked out to its end, or an arithmetic slip), then "Wait," and
    the repair."""
    pool, texts = list(problem.numbers), []
    for step in problem.steps:
        if rng.random() < error_rate:
            texts += _mistake(rng, pool, step, problem.target)
        pool = after(pool, step)
        texts.append(step_text(step, pool))
    texts.append(f"So {boxed(problem)} = {problem.target}.")
    return texts


def _mistake(rng: random.Random, pool: list[int], step: Step, target: int) -> list[str]:
    # Proving a branch is a dead end searches all that follows it: cheap only when the branch
    # leaves 4 numbers or fewer.
    if len(pool) <= 5 and rng.random() < 0.5:
        branches = [m for m in moves(pool) if m[3] != step[3]]
        rng.shuffle(branches)
        for branch in branches:
            left = after(pool, branch)
            if not _solvable(tuple(sorted(left)), target):
                texts = [step_text(branch, left)]
                while len(left) > 1:
                    move = rng.choice(moves(left))
                    left = after(left, move)
                    texts.append(step_text(move, left))
                shown = ", ".join(map(str, pool))
                a, op, b, _ = branch
                texts.append(
                    f"Wait, {left[0]} is not {target}, and nothing after {a} {op} {b} "
                    f"reaches {target}. Back to {shown}."
                )
                return texts
    a, op, b, c = step
    slip = c + rng.choice([-10, -2, -1, 1, 2, 10])
    slip = slip if slip > 0 else c + 1
    return [
        step_text((a, op, b, slip), after(pool, (a, op, b, slip))),
        f"Wait, {a} {op} {b} is {c}, not {slip}.",
    ]


@lru_cache(maxsize=1 << 16)
def _solvable(pool: tuple[int, ...], target: int) -> bool:
    if target in pool:
        return True
    return any(_solvable(tuple(sorted(after(list(pool), m))), target) for m in moves(list(pool)))


def greedy_solves(problem: Countdown) -> bool:
    """Does the greedy first attempt (the step closest to the target, every time) succeed?"""
    pool = list(problem.numbers)
    while len(pool) > 1:
        step = min(moves(pool), key=lambda m: abs(m[3] - problem.target))
        if step[3] == problem.target:
            return True
        pool = after(pool, step)
    return False


def parse_problem(problem: str) -> tuple[list[int], int] | None:
    """The numbers and the target of a problem's text; None if it is not a countdown problem."""
    match = _PROBLEM.fullmatch(problem.strip())
    if not match:
        return None
    return [int(n) for n in match.group(1).split(", ")], int(match.group(2))


def _take(pool: list[int], text: str) -> list[int] | None:
    """The pool after the step `text`, or None if it is malformed or wrong."""
    match = _STEP.fullmatch(text.strip())
    if not match:
        return None
    a, op, b, c = int(match.group(1)), match.group(2), int(match.group(3)), int(match.group(4))
    if combine(a, op, b) != c or not Counter([a, b]) <= Counter(pool):
        return None
    left = after(pool, (a, op, b, c))
    claimed = [int(n) for n in match.group(5).split(", ")]
    return left if Counter(claimed) == Counter(left) else None


def check_step(problem: str, previous_steps: list[str], step: str) -> bool:
    """Is `step` a valid next step after `previous_steps` for `problem` (its text)? Valid: it
    combines two available numbers correctly into a positive integer, lists what is left, and
    the target was not reached already."""
    parsed = parse_problem(problem)
    if parsed is None:
        return False
    pool, target = parsed
    for done in previous_steps:
        pool = _take(pool, done)
        if pool is None or target in pool:
            return False
    return _take(pool, step) is not None


def check_answer(problem: str, answer: str) -> bool:
    """Is `answer` an expression that reaches the target using only the given numbers, each at
    most once, with every intermediate result a positive integer?"""
    parsed = parse_problem(problem)
    used: list[int] = []
    try:
        tree = ast.parse(answer.replace("\\times", "*").replace("\\div", "/"), mode="eval")
        value = _evaluate(tree.body, used)
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # nonsense, NUL, deep nesting
        return False
    return parsed is not None and value == parsed[1] and Counter(used) <= Counter(parsed[0])


def _evaluate(node: ast.expr, used: list[int]) -> int | None:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        used.append(node.value)
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _AST_OPS:
        a, b = _evaluate(node.left, used), _evaluate(node.right, used)
        return None if a is None or b is None else combine(a, _AST_OPS[type(node.op)], b)
    return None
