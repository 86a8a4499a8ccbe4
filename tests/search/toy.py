"""Test doubles for the search strategies: a 'model' and a 'PRM' whose behaviour is a table.

Search algorithms are checked on a world where every next step and every score is known, so a
wrong selection, aggregation or backup rule picks a wrong path and fails a test. No real model
can give that (a random tiny model writes gibberish, and no trained one can be downloaded here);
the same strategies also run end to end on the native engine in their own tests.
"""

from __future__ import annotations

from types import SimpleNamespace

from tts.engine import Completion, SamplingParams

DELIMITER = "\n\n"


def steps_of(prompt: str) -> tuple[str, ...]:
    """The steps written so far: what follows the plain-text prompt's "Answer:"."""
    written = prompt.partition("Answer:")[2]
    return tuple(step for step in written.split(DELIMITER) if step)


class ToyBackend:
    """Next steps come from `table[steps so far]`, in order, cycling when n exceeds them.

    A step containing \\boxed is a final answer: it ends at "EOS" (stop_reason None); others
    end at the delimiter. Each step costs as many tokens as it has words. When logprobs are
    asked for, a step's tokens' log-probabilities sum to `likelihoods[step]` (default 0).
    """

    tokenizer = SimpleNamespace(chat_template=None)  # strategies fall back to a plain prompt

    def __init__(
        self,
        table: dict[tuple[str, ...], list[str]],
        likelihoods: dict[str, float] | None = None,
    ) -> None:
        self.table = table
        self.likelihoods = likelihoods or {}
        self.calls: list[tuple[tuple[str, ...], SamplingParams]] = []
        self.prompts: list[str] = []

    async def generate(self, prompt: str, params: SamplingParams) -> list[Completion]:
        steps = steps_of(prompt)
        self.calls.append((steps, params))
        self.prompts.append(prompt)
        options = self.table[steps]
        completions = []
        for i in range(params.n):
            text = options[i % len(options)]
            token_ids = list(range(len(text.split())))
            logprobs = [{token: 0.0} for token in token_ids]
            logprobs[0] = {0: self.likelihoods.get(text, 0.0)}
            completions.append(
                Completion(
                    text=text,
                    token_ids=token_ids,
                    logprobs=None if params.logprobs is None else logprobs,
                    finish_reason="stop",
                    prompt_tokens=len(prompt.split()),
                    stop_reason=None if "\\boxed" in text else DELIMITER,
                )
            )
        return completions


class RootByFilter(ToyBackend):
    """A ToyBackend whose first steps on offer change with each call at the root, that is with
    each particle filter of a search: `roots[i]` for the i-th (the last one again after that)."""

    def __init__(self, table: dict[tuple[str, ...], list[str]], roots: list[list[str]]) -> None:
        super().__init__(dict(table))
        self.roots = roots

    async def generate(self, prompt: str, params: SamplingParams) -> list[Completion]:
        self.table[()] = self.roots[
            min(sum(not steps for steps, _ in self.calls), len(self.roots) - 1)
        ]
        return await super().generate(prompt, params)


class ToyScorer:
    """A PRM whose score of a step is `scores[step]` (default 0.5), whatever came before."""

    def __init__(self, scores: dict[str, float]) -> None:
        self.scores = scores
        self.calls = 0

    async def score(self, problem: str, steps: list[str]) -> list[float]:
        self.calls += 1
        return [self.scores.get(step, 0.5) for step in steps]
