"""An outcome scorer: the final answer against a known gold answer, no model.

Used where the gold answer is known, to make training data (rejection sampling, Math-Shepherd
style rollouts): a search run with it finds solutions that are right, not ones a PRM likes.
"""

from __future__ import annotations

from tts.verifiers.rewards import accuracy_reward

STEP_DELIMITER = "\n\n"  # how strategies split a solution into steps (DESIGN.md)


class OutcomeScorer:
    """Score 0.0 for every step but the last; the last is 1.0 when the answer extracted from the
    steps joined by blank lines equals `gold` (`extract_answer` + `math_equal`), else 0.0.

    Attributes `calls` and `tokens` match the model-based scorers'; `tokens` stays 0.
    """

    def __init__(self, gold: str) -> None:
        self.gold = gold
        self.calls = 0
        self.tokens = 0

    async def score(self, problem: str, steps: list[str]) -> list[float]:
        self.calls += 1
        if not steps:
            return []
        last = accuracy_reward(STEP_DELIMITER.join(steps), self.gold)
        return [0.0] * (len(steps) - 1) + [last]
