"""Token-classification PRMs: the format TRL's `PRMTrainer` trains and saves.

TRL (`trl.PRMTrainer.tokenize_row`, `trl.PRMConfig.step_separator`) trains an
`AutoModelForTokenClassification` with two labels on stepwise data: the input is BOS (when the
tokenizer has one), the prompt, then each step followed by the separator, every piece tokenized
on its own; only the last token of each step-plus-separator carries a label (1 good, 0 bad). A
score is read where the label was trained, so this module builds its input the same way.

A PRM whose backbone is the policy can ask instead for the text the policy wrote
(`encode_policy_text`): the prompt as the policy saw it, the steps joined by the separator, and
one tokenization of the whole. TRL's piecewise input is text the backbone never saw in
training: the problem without its chat template, and every step end split into pieces that the
policy writes as one token (the built-in model writes ".\n\n" as one token; TRL gives it
".", "\n", "\n"). Out of its own distribution the backbone's next-token knowledge, the part
that knows whether `83 - 18 = 63` is right, is mostly lost: the built-in model's likelihood
tells its good steps from bad at AUROC 0.81 on its own text and 0.54 on TRL's
(`benchmarks/policy_likelihood.py`).
"""

from __future__ import annotations

from itertools import chain
from pathlib import Path

import torch
from transformers import AutoModelForTokenClassification, PreTrainedTokenizerBase

from tts.errors import TTSError
from tts.verifiers.prm.batching import BatchedScorer

TRL_STEP_SEPARATOR = "\n"  # trl.PRMConfig.step_separator's default


def encode_stepwise(
    tokenizer: PreTrainedTokenizerBase,
    problem: str,
    steps: list[str],
    separator: str = TRL_STEP_SEPARATOR,
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


PROBLEM = "{problem}"  # where a prompt template takes the problem


def encode_policy_text(
    tokenizer: PreTrainedTokenizerBase,
    problem: str,
    steps: list[str],
    separator: str,
    prompt_template: str,
) -> tuple[list[int], list[int], int]:
    """Token ids, labelled positions and the solution's first token of the text the policy
    wrote, tokenized as one string.

    The text is `prompt_template` with the problem in place of "{problem}", then every step
    followed by the separator. Step i is scored at the last token that ends within its step and
    separator, so its score never depends on a later step (a token that runs past the end, as a
    separator merged with the next step's first word would, belongs to the next step).
    """
    if not tokenizer.is_fast:
        raise TTSError("a PRM on the policy's text needs a fast tokenizer (token offsets)")
    prompt = prompt_template.replace(PROBLEM, problem)
    text, ends = prompt, []
    for step in steps:
        text += step + separator
        ends.append(len(text))
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    token_ends = [end for _, end in encoding["offset_mapping"]]
    start = sum(end <= len(prompt) for end in token_ends)
    positions, token = [], 0
    for end in ends:
        while token < len(token_ends) and token_ends[token] <= end:
            token += 1
        positions.append(token - 1)
    return encoding["input_ids"], positions, start


class TokenClassificationPRM(BatchedScorer):
    """A TRL-format PRM: score of step i = softmax(logits at the token ending step i)[label 1].

    step_separator: the text TRL appended after each step in training (`PRMConfig.step_separator`).
    prompt_template: when given, the input is the policy's own text (`encode_policy_text`)
    rather than TRL's.
    """

    def __init__(
        self,
        path: Path,
        tokenizer,
        device: torch.device,
        dtype: torch.dtype,
        max_batch_size: int,
        step_separator: str = TRL_STEP_SEPARATOR,
        prompt_template: str | None = None,
    ) -> None:
        model = AutoModelForTokenClassification.from_pretrained(
            path, dtype=dtype, use_safetensors=True
        )
        model = model.to(device).eval()
        max_positions = getattr(model.config, "max_position_embeddings", None)
        super().__init__(model, tokenizer, device, max_batch_size, max_positions)
        self.step_separator = step_separator
        self.prompt_template = prompt_template

    def encode(self, problem: str, steps: list[str]) -> tuple[list[int], list[int], int]:
        if self.prompt_template is None:
            return *encode_stepwise(self.tokenizer, problem, steps, self.step_separator), 0
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
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        return logits[rows, cols].float().softmax(dim=-1)[:, 1]
