"""Math-Shepherd PRMs: a causal LM that reads a step tag and predicts "+" (good) or "-" (bad).

Math-Shepherd (Wang et al., 2024, "Math-Shepherd: Verify and Reinforce LLMs Step-by-step without
Human Annotations") trains a causal LM on solutions whose steps each end with the tag "ки"; at
each tag the model's next-token distribution restricted to "+" and "-" is the step's score. The
published checkpoint (peiyi9979/math-shepherd-mistral-7b-prm) is a plain `MistralForCausalLM`
with Mistral's own tokenizer, and its model card builds the input as
`f"{question} {output}"` with `output = "Step 1: ... ки\\nStep 2: ... ки"`, encoded with BOS, and
reads `softmax(logits[tag positions][:, ["+", "-"]])[:, 0]`. This module does the same.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from tts.errors import TTSError
from tts.verifiers.prm.batching import BatchedScorer

STEP_TAG = "ки"
GOOD_TOKEN = "+"
BAD_TOKEN = "-"


class MathShepherdPRM(BatchedScorer):
    """Score of step i = P(good) / (P(good) + P(bad)) at the i-th step tag.

    The text is `problem + " " + "\\n".join(step + " " + tag for step in steps)`: the model card's
    layout (its steps carry their own "Step k:" prefixes; ours are scored as given). A tag inside
    the problem or a step is removed first, since the model reads every tag as a score position.
    """

    def __init__(
        self,
        path: Path,
        tokenizer,
        device: torch.device,
        dtype: torch.dtype,
        max_batch_size: int,
        step_tag: str = STEP_TAG,
        good_token: str = GOOD_TOKEN,
        bad_token: str = BAD_TOKEN,
    ) -> None:
        # The model card's own recipe for the ids: the tag's last token, and "+ -" as two tokens
        # (sentencepiece vocabularies spell them with a leading space, as they follow a space).
        self.step_tag = step_tag
        self.step_tag_id = tokenizer.encode(step_tag, add_special_tokens=False)[-1]
        candidates = tokenizer.encode(f"{good_token} {bad_token}", add_special_tokens=False)
        if len(candidates) != 2:
            raise TTSError(
                f"{path}: a Math-Shepherd PRM needs {good_token!r} and {bad_token!r} as one "
                f"token each; the tokenizer makes {len(candidates)} tokens of them"
            )
        self.candidate_ids = candidates
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, use_safetensors=True)
        model = model.to(device).eval()
        max_positions = getattr(model.config, "max_position_embeddings", None)
        super().__init__(model, tokenizer, device, max_batch_size, max_positions)

    def encode(self, problem: str, steps: list[str]) -> tuple[list[int], list[int], int]:
        tag = self.step_tag
        solution = "\n".join(f"{step.replace(tag, '')} {tag}" for step in steps)
        input_ids = self.tokenizer.encode(f"{problem.replace(tag, '')} {solution}")
        return input_ids, [i for i, t in enumerate(input_ids) if t == self.step_tag_id], 0

    def step_probabilities(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        rows: torch.Tensor,
        cols: torch.Tensor,
        starts: torch.Tensor,
    ) -> torch.Tensor:
        # The LM head only at the tag positions: the full (batch, length, vocabulary) logits of
        # a 32k-vocabulary model would take gigabytes for a batch of long solutions.
        hidden = self.model.base_model(
            input_ids=input_ids, attention_mask=attention_mask, use_cache=False
        ).last_hidden_state
        logits = self.model.get_output_embeddings()(hidden[rows, cols])
        return logits[:, self.candidate_ids].float().softmax(dim=-1)[:, 0]
