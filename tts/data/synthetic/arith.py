"""`arith`: evaluate an integer expression one operation at a time.

A problem is an expression of + - * on non-negative integers, evaluated with the usual
precedence (every * before any + or -, each left to right). A solution takes one operation per
step, `a op b = c`, and writes the expression that remains; the last line is
`The answer is \\boxed{N}`. Intermediate values stay in [0, 9999] and a product's right
operand is a single digit, so every step is one a small model can learn.

Difficulty (operations, operand digits): 1 (2, 1), 2 (3, 1), 3 (4, 1-2), 4 (5, 2), 5 (6, 2-3).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

DIFFICULTIES = {1: (2, 1, 1), 2: (3, 1, 1), 3: (4, 1, 2), 4: (5, 2, 2), 5: (6, 2, 3)}
_STEP = re.compile(r"(\d+) ([+\-*]) (\d+) = (\d+), leaving (.+)\.")


@dataclass(frozen=True)
class Expression:
    """numbers[i] op[i] numbers[i+1] ...; ops are "+", "-" or "*"."""

    numbers: tuple[int, ...]
    ops: tuple[str, ...]

    def __str__(self) -> str:
        parts = [str(self.numbers[0])]
        for op, number in zip(self.ops, self.numbers[1:]):
            parts += [op, str(number)]
        return " ".join(parts)

    def next_index(self) -> int:
        """The operation evaluated next: the first *, else the first + or -."""
        return self.ops.index("*") if "*" in self.ops else 0

    def reduce(self) -> tuple[int, str, int, int, Expression]:
        """Apply the next operation: (a, op, b, result, the expression left)."""
        i = self.next_index()
        a, b, op = self.numbers[i], self.numbers[i + 1], self.ops[i]
        result = a + b if op == "+" else a - b if op == "-" else a * b
        numbers = self.numbers[:i] + (result,) + self.numbers[i + 2 :]
        return a, op, b, result, Expression(numbers, self.ops[:i] + self.ops[i + 1 :])

    def value(self) -> int:
        expression = self
        while expression.ops:
            expression = expression.reduce()[-1]
        return expression.numbers[0]


MAX_VALUE = 9999


def generate(rng: random.Random, difficulty: int) -> Expression:
    """A random expression of this difficulty (rejection sampling within the bounds above)."""
    num_ops, low_digits, high_digits = DIFFICULTIES[difficulty]
    while True:
        ops = tuple(rng.choice("+-*") for _ in range(num_ops))
        digits = [rng.randint(low_digits, high_digits) for _ in range(num_ops + 1)]
        for i, op in enumerate(ops):
            if op == "*":
                digits[i + 1] = 1
        numbers = tuple(rng.randint(1 if d == 1 else 10 ** (d - 1), 10**d - 1) for d in digits)
        expression = Expression(numbers, ops)
        values = [n for e in _trajectory(expression) for n in e.numbers]
        if min(values) >= 0 and max(values) <= MAX_VALUE:
            return expression


def _trajectory(expression: Expression) -> list[Expression]:
    states = [expression]
    while states[-1].ops:
        states.append(states[-1].reduce()[-1])
    return states


def problem_text(expression: Expression) -> str:
    return f"Evaluate {expression}."


def key(expression: Expression) -> str:
    """The problem itself, for keeping eval and training apart."""
    return problem_text(expression)


def gold(expression: Expression) -> str:
    return str(expression.value())


boxed = gold  # the boxed answer is the value itself


def step_text(a: int, op: str, b: int, result: int, left: Expression) -> str:
    return f"{a} {op} {b} = {result}, leaving {left}."


def solution_steps(expression: Expression) -> list[str]:
    """The short chain of thought: one step per operation."""
    steps = []
    while expression.ops:
        *step, expression = expression.reduce()
        steps.append(step_text(*step, expression))
    return steps


def thoughts(rng: random.Random, expression: Expression, error_rate: float) -> list[str]:
    """The long chain of thought: before each step, with probability `error_rate`, the step
    with an arithmetic slip, then "Wait," and the step redone."""
    texts, value = [], expression.value()
    for step in solution_steps(expression):
        if rng.random() < error_rate:
            a, op, b, result, _ = expression.reduce()
            texts.append(wrong_step(rng, expression))
            texts.append(
                f"Wait, {a} {op} {b} is not that. Let me redo it: {a} {op} {b} = {result}."
            )
        texts.append(step)
        expression = expression.reduce()[-1]
    texts.append(f"So the value is {value}.")
    return texts


def wrong_step(rng: random.Random, expression: Expression) -> str:
    """The next step with a plausible arithmetic slip (off by a small amount)."""
    a, op, b, result, left = expression.reduce()
    slip = result + rng.choice([-10, -2, -1, 1, 2, 10])
    slip = slip if slip >= 0 else result + 1
    i = expression.next_index()
    wrong_left = Expression(left.numbers[:i] + (slip,) + left.numbers[i + 1 :], left.ops)
    return step_text(a, op, b, slip, wrong_left)


def slip_pair(rng: random.Random, expression: Expression) -> tuple[list[str], str, str]:
    """The right solution's steps up to a random depth, the right next step, and that step with a
    slip (`wrong_step`): a verifier that spots slips scores the right one higher."""
    steps = solution_steps(expression)
    depth = rng.randrange(len(steps))
    for _ in range(depth):
        expression = expression.reduce()[-1]
    return steps[:depth], steps[depth], wrong_step(rng, expression)


def parse_expression(text: str) -> Expression | None:
    tokens = text.split()
    if len(tokens) % 2 == 0 or not all(t.isdigit() for t in tokens[::2]):
        return None
    if not all(t in ("+", "-", "*") for t in tokens[1::2]):
        return None
    return Expression(tuple(int(t) for t in tokens[::2]), tuple(tokens[1::2]))


def check_step(problem: str, previous_steps: list[str], step: str) -> bool:
    """Is `step` the right next step after `previous_steps` (each of which must be right too)
    for `problem` (its text)?"""
    current = parse_expression(problem.removeprefix("Evaluate ").removesuffix("."))
    for text in [*previous_steps, step]:
        current = _take(current, text) if current is not None else None
    return current is not None


def _take(current: Expression, text: str) -> Expression | None:
    """What is left after the step `text`, or None if it is not the right next step."""
    match = _STEP.fullmatch(text.strip())
    if not match or not current.ops:
        return None
    a, op, b, result, left = current.reduce()
    right = (
        (int(match.group(1)), match.group(2), int(match.group(3))) == (a, op, b)
        and int(match.group(4)) == result
        and parse_expression(match.group(5)) == left
    )
    return left if right else None
