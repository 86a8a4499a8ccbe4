"""Token-classification PRMs: the format TRL's `PRMTrainer` trains and saves.

TRL (`trl.PRMTrainer.tokenize_row`, `trl.PRMConfig.step_separator`) trains an
`AutoModelForTokenClassification` with two labels on stepwise data: the input is BOS (when the
tokenizer has one), the prompt, then each step followed by the separator, every piece tokenized
on its own; only the last token of each step-plus-separator carries a label (1 good, 0 bad). A
score is read where the label was trained, so this module builds its input the same way.
"""

from __future__ import annotations

from itertools import chain
from pathlib import Path

import torch
from transformers import AutoModelForTokenClassification

from tts.verifiers.prm_batching import BatchedScorer

TRL_STEP_SEPARATOR = "\n"  # trl.PRMConfig.step_separator's default


def encode_stepwise(
    tokenizer, problem: str, steps: list[str], separator: str = TRL_STEP_SEPARATOR
) -> tuple[list[int], list[int]]:
    """Token ids and labelled positions exactly as TRL's `PRMTrainer.tokenize_row` builds them.

    Returns (input_ids, positions): positions[i] is the index of the last separator token after
    step i. The problem and every step are tokenized apart, so a step's tokens never depend on
    its neighbours (the score of step i depends on steps up to i only, for a causal backbone),
    and a separator inside a step is just text: positions come from the construction, not from
    searching for the separator.
    """
    prompt_ids = tokenizer(problem, add_special_tokens=False)["input_ids"]
    if tokenizer.bos_token_id is not None:
        prompt_ids = [tokenizer.bos_token_id, *prompt_ids]
    separator_ids = tokenizer.encode(separator, add_special_tokens=False)
    step_ids = [
        tokenizer(step, add_special_tokens=False)["input_ids"] + separator_ids for step in steps
    ]
    positions, end = [], len(prompt_ids)
    for ids in step_ids:
        end += len(ids)
        positions.append(end - 1)
    return prompt_ids + list(chain(*step_ids)), positions


class TokenClassificationPRM(BatchedScorer):
    """A TRL-format PRM: score of step i = softmax(logits at the token ending step i)[label 1].

    step_separator: the text TRL appended after each step in training (`PRMConfig.step_separator`).
    """

    def __init__(
        self,
        path: Path,
        tokenizer,
        device: torch.device,
        dtype: torch.dtype,
        max_batch_size: int,
        step_separator: str = TRL_STEP_SEPARATOR,
    ) -> None:
        model = AutoModelForTokenClassification.from_pretrained(
            path, dtype=dtype, use_safetensors=True
        )
        model = model.to(device).eval()
        max_positions = getattr(model.config, "max_position_embeddings", None)
        super().__init__(model, tokenizer, device, max_batch_size, max_positions)
        self.step_separator = step_separator

    def encode(self, problem: str, steps: list[str]) -> tuple[list[int], list[int]]:
        return encode_stepwise(self.tokenizer, problem, steps, self.step_separator)

    def step_probabilities(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        rows: torch.Tensor,
        cols: torch.Tensor,
    ) -> torch.Tensor:
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        return logits[rows, cols].float().softmax(dim=-1)[:, 1]
