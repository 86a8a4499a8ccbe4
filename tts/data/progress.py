"""What a person sees of a long run (`tts bench`, `tts compare`, `tts data`): a progress bar
that moves with the work, and a warning when the model cannot do the task.

Rows (or problems) finish in bursts: the backend batches every one in flight, so they all
progress together and end together, and a bar over rows sits at 0 for most of the run. The bar
here counts candidates instead, the samples a run draws (n per row, known up front), and
advances as each `generate` call returns, through a thin wrapper around the backend; its
postfix shows the tokens generated so far. A finer grain would need the backend to report
tokens as they are sampled: a single `generate` of n samples returns all n at once.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tqdm import tqdm

from tts.engine import Backend, Completion, SamplingParams
from tts.models.builtin import BUILTIN


class Progress:
    """A bar over the candidates of a run: `total` of them, `initial` done by earlier runs."""

    def __init__(self, total: int, desc: str, initial: int = 0) -> None:
        self.bar = tqdm(total=total, initial=initial, desc=desc, unit="sample")
        self.samples, self.tokens = initial, 0  # kept here too: a disabled bar counts nothing

    def track(self, backend: Backend, budget: int) -> TrackedBackend:
        """A backend for one row (or problem) whose `budget` samples the bar counts."""
        return TrackedBackend(backend, self, budget)

    def advance(self, samples: int, tokens: int = 0) -> None:
        self.samples += samples
        self.tokens += tokens
        self.bar.set_postfix_str(f"{self.tokens:,} tokens", refresh=False)
        self.bar.update(samples)

    def close(self) -> None:
        self.bar.close()


class TrackedBackend:
    """`backend`, counting what it returns on `progress`: every sample that ended a solution
    (a completion not cut at one of its stop strings, which in a step-level search only ends a
    step) up to the row's `budget`; `settle()` counts the rest of the budget once the row is
    done, so the bar's total is exact whatever the strategy."""

    def __init__(self, backend: Backend, progress: Progress, budget: int) -> None:
        self.backend, self.progress, self.budget = backend, progress, budget
        self.tokenizer = backend.tokenizer
        self.counted = 0

    async def generate(self, prompt: str | list[int], params: SamplingParams) -> list[Completion]:
        completions = await self.backend.generate(prompt, params)
        ended = sum(_ends_solution(c, params) for c in completions)
        samples = min(ended, self.budget - self.counted)
        self.counted += samples
        self.progress.advance(samples, sum(len(c.token_ids) for c in completions))
        return completions

    def settle(self) -> None:
        self.progress.advance(self.budget - self.counted)
        self.counted = self.budget


def _ends_solution(completion: Completion, params: SamplingParams) -> bool:
    return not params.stop or (
        completion.finish_reason == "stop" and completion.stop_reason not in params.stop
    )


def warn_demo_model(model: str, dataset: str) -> None:
    """One line on stderr when the built-in model is run on anything but its synthetic tasks:
    it is a demo that has never seen other problems, and writes until the token limit on them."""
    if dataset.startswith("synth:"):
        return
    if model != "builtin" and Path(model).expanduser().resolve() != BUILTIN:
        return
    print(
        "tts: warning: the built-in model is a small demo trained only on the synthetic tasks "
        f"(synth:TASK:DIFFICULTY); on {dataset} expect almost no right answers and most "
        "samples to run to --max-tokens. Use --model DIR for a real model.",
        file=sys.stderr,
    )
