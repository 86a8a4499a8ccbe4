"""The two trace styles every synthetic task is written in, for the long- vs short-CoT
comparison of Yeo et al., 2025 ("Demystifying Long Chain-of-Thought Reasoning in LLMs").

- short: the solution's steps, separated by blank lines (the step boundary step-level search
  stops at), then `The answer is \\boxed{...}.`;
- long: `<think>` first, where the model works step by step and, at a controlled rate, makes a
  real mistake, notices it ("Wait, ...") and repairs it; then `</think>` and the short trace,
  whose answer is always right;
- search (countdown): `<think>` holds the stream of a real depth-first search (Gandhi et al.,
  2024, "Stream of Search": every step tried, every dead end named with the pool it backs up
  to), then `</think>` and the path it found; path: that path alone, the short trace of the
  search style.
"""

from __future__ import annotations


def short_trace(steps: list[str], boxed: str) -> str:
    return "\n\n".join(steps + [f"The answer is \\boxed{{{boxed}}}."])


def long_trace(thoughts: list[str], short: str) -> str:
    return "<think>\n" + "\n\n".join(thoughts) + "\n</think>\n\n" + short
