"""The trainers' one evaluator: pass@1 graded by `is_correct`, each problem posed and sampled
as the caller asks."""

from __future__ import annotations

import pytest

from tts.data.problem import Problem
from tts.engine import Completion, SamplingParams
from tts.train.evaluate import pass_at_1


class Scripted:
    """A backend that answers each prompt with the texts scripted for it, `params.n` of them."""

    tokenizer = None  # no chat template: build_prompt writes "Question: ...\nAnswer:"

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers, self.asked = answers, []

    async def generate(self, prompt: str, params: SamplingParams) -> list[Completion]:
        self.asked.append((prompt, params))
        problem = next(p for p in self.answers if p in prompt)
        texts = self.answers[problem][: params.n]
        return [Completion(text, [0], "stop") for text in texts]


def test_pass_at_1_is_the_mean_over_problems_of_the_share_of_right_samples():
    problems = [Problem("a", "What is 1 + 1?", "2"), Problem("b", "What is 2 + 2?", "4")]
    backend = Scripted(
        {
            "1 + 1": ["\\boxed{2}", "\\boxed{3}", "no answer", "The answer is 2."],
            "2 + 2": ["\\boxed{4.0}", "\\boxed{4}", "\\boxed{5}", "\\boxed{1}"],
        }
    )
    params = {"a": SamplingParams(n=4, seed=1), "b": SamplingParams(n=4, seed=2)}
    score = pass_at_1(backend, problems, "Think.", lambda problem: params[problem.id])
    assert score == pytest.approx((2 / 4 + 2 / 4) / 2)
    assert [asked for _, asked in backend.asked] == [params["a"], params["b"]]
    assert all(
        prompt.startswith("Question: What is") and "Think." in prompt for prompt, _ in backend.asked
    )
