"""Implicit PRMs: step values read off a causal LM's likelihood against a reference's.

Yuan et al., 2024, "Free Process Rewards without Process Labels" (arXiv 2412.01981): with the
outcome reward parameterised as a log-likelihood ratio, r(y) = beta * log pi(y) / pi_ref(y),
the value after the first t tokens is q_t = beta * sum_{i<=t} log pi(y_i | y_<i) /
pi_ref(y_i | y_<i) (their Proposition 3.1), so a model trained on outcomes scores every prefix,
and one trained on step labels (`tts train prm --objective implicit`) scores each step's value
directly. P(good) of step k is sigmoid(q) at the token that ends it.

That sum is `value: sum`. `value: min` reads the same token ratios in min form (Cheng et al.,
2025, "Stop Summation: Min-Form Credit Assignment Is All Process Reward Model Needs for
Reasoning", arXiv 2504.15275): a step's reward is the sum over its own tokens, and the value
after step k is the lowest reward of steps 1..k. A solution is as good as its worst step, as
Math-Shepherd's hard labels say (after a slip every later step is bad); a sum lets later steps
that the model likes pay back a slip.

Why a ratio and not a head: the policy's own next-token distribution already knows whether
`83 - 18 = 63` is right, and a ratio against the policy reads that knowledge at the very token
that slipped, where a classification head at the step's end has to learn to find it. The input
is the policy's own text (`prm_token.encode_policy_text`), so both models read what they
were trained on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from transformers import AutoModelForCausalLM

from tts.verifiers.prm.batching import BatchedScorer
from tts.verifiers.prm.token import encode_policy_text


def token_log_ratios(
    model: torch.nn.Module,
    reference: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
) -> torch.Tensor:
    """log pi(token t | tokens before) - log pi_ref(same), shape (batch, length); column 0,
    which nothing predicts, is 0. The reference runs without gradients."""

    def log_probabilities(lm: torch.nn.Module) -> torch.Tensor:
        logits = lm(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()
        chosen = logits.gather(-1, input_ids[:, 1:, None])[..., 0]
        return chosen - logits.logsumexp(dim=-1)

    with torch.no_grad():
        reference_lp = log_probabilities(reference)
    ratios = log_probabilities(model) - reference_lp
    return torch.nn.functional.pad(ratios, (1, 0))


Value = Literal["sum", "min"]


def step_values(
    ratios: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    starts: torch.Tensor,
    value: Value,
) -> torch.Tensor:
    """The value (over beta) after every step, one per (row, col), each row's steps
    consecutive and in order. "sum": the sum of ratios[row, starts[row] .. col], the log-ratio
    of the solution so far, the prompt left out (q_t / beta). "min": the lowest step reward so
    far, a step's reward being the sum of its own tokens' ratios."""
    columns = torch.arange(ratios.shape[1], device=ratios.device)
    solution = ratios * (columns[None, :] >= starts[:, None])
    sums = solution.cumsum(dim=1)[rows, cols]
    if value == "sum":
        return sums
    first = torch.ones_like(rows, dtype=torch.bool)
    first[1:] = rows[1:] != rows[:-1]
    before = torch.cat([sums.new_zeros(1), sums[:-1]]).masked_fill(first, 0.0)
    rewards = sums - before
    counts = torch.unique_consecutive(rows, return_counts=True)[1].tolist()
    return torch.cat([steps.cummin(dim=0).values for steps in rewards.split(counts)])


class ImplicitPRM(BatchedScorer):
    """An implicit PRM folder: a causal LM, the reference it was trained against, beta, and
    the value's form."""

    def __init__(
        self,
        path: Path,
        tokenizer,
        device: torch.device,
        dtype: torch.dtype,
        max_batch_size: int,
        reference: Path,
        beta: float,
        value: Value,
        step_separator: str,
        prompt_template: str,
    ) -> None:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, use_safetensors=True)
        model = model.to(device).eval()
        max_positions = getattr(model.config, "max_position_embeddings", None)
        super().__init__(model, tokenizer, device, max_batch_size, max_positions)
        self.reference = AutoModelForCausalLM.from_pretrained(
            reference, dtype=dtype, use_safetensors=True
        )
        self.reference = self.reference.to(device).eval()
        self.beta = beta
        self.value = value
        self.step_separator = step_separator
        self.prompt_template = prompt_template

    def encode(self, problem: str, steps: list[str]) -> tuple[list[int], list[int], int]:
        return encode_policy_text(
            self.tokenizer, problem, steps, self.step_separator, self.prompt_template
        )

    def step_probabilities(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        rows: torch.Tensor,
        cols: torch.Tensor,
        starts: torch.Tensor,
    ) -> torch.Tensor:
        ratios = token_log_ratios(self.model, self.reference, input_ids, attention_mask)
        return torch.sigmoid(self.beta * step_values(ratios, rows, cols, starts, self.value))
