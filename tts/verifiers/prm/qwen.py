"""Qwen2.5-Math-PRM: a Qwen2 backbone with a two-label head read at "<extra_0>" step separators.

Qwen2.5-Math-PRM (Zhang et al., 2025, "The Lessons of Developing Process Reward Models in
Mathematical Reasoning") ships its model class as remote code (modeling_qwen2_rm.py), which tts
never runs; the class is small, so it is rebuilt here with the checkpoint's parameter names
(`model.*` for the `Qwen2Model`, `score.0.*` and `score.2.*` for the head). The model card scores
a chat: system prompt, the problem as the user turn, and the steps as the assistant turn, each
step followed by "<extra_0>"; the score of step i is softmax(logits at the i-th separator)[1].
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import Qwen2Config, Qwen2Model
from transformers.models.qwen2.modeling_qwen2 import Qwen2PreTrainedModel

from tts.errors import TTSError
from tts.verifiers.prm.batching import BatchedScorer

SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."
STEP_SEPARATOR = "<extra_0>"


class Qwen2ForProcessRewardModel(Qwen2PreTrainedModel):
    """The Qwen2.5-Math-PRM network: `Qwen2Model`, then Linear(hidden, hidden), ReLU and
    Linear(hidden, 2) on every token. `forward` returns logits of shape (batch, length, 2)."""

    def __init__(self, config: Qwen2Config) -> None:
        super().__init__(config)
        self.model = Qwen2Model(config)
        hidden = config.hidden_size
        self.score = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 2))
        self.post_init()

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        hidden = self.model(
            input_ids=input_ids, attention_mask=attention_mask, use_cache=False
        ).last_hidden_state
        return self.score(hidden)


class QwenPRM(BatchedScorer):
    """Score of step i = softmax(head(hidden state at the i-th "<extra_0>"))[1].

    The text is the tokenizer's chat template over [system SYSTEM_PROMPT, user problem,
    assistant "<extra_0>".join(steps) + "<extra_0>"], as on the model card. A separator inside the
    problem or a step is removed first, since every separator is read as a score position.
    """

    def __init__(
        self,
        path: Path,
        tokenizer,
        device: torch.device,
        dtype: torch.dtype,
        max_batch_size: int,
    ) -> None:
        separator_ids = tokenizer.encode(STEP_SEPARATOR, add_special_tokens=False)
        if len(separator_ids) != 1:
            raise TTSError(f"{path}: the tokenizer has no {STEP_SEPARATOR} token")
        self.separator_id = separator_ids[0]
        model = Qwen2ForProcessRewardModel.from_pretrained(path, dtype=dtype, use_safetensors=True)
        model = model.to(device).eval()
        super().__init__(
            model, tokenizer, device, max_batch_size, model.config.max_position_embeddings
        )

    def encode(self, problem: str, steps: list[str]) -> tuple[list[int], list[int], int]:
        sep = STEP_SEPARATOR
        messages = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": problem.replace(sep, "")},
            {"role": "assistant", "content": sep.join(s.replace(sep, "") for s in steps) + sep},
        ]
        text = self.tokenizer.apply_chat_template(messages, tokenize=False)
        # The template wrote every special token already; the Qwen tokenizer adds none anyway.
        input_ids = self.tokenizer.encode(text, add_special_tokens=False)
        return input_ids, [i for i, t in enumerate(input_ids) if t == self.separator_id], 0

    def step_probabilities(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        rows: torch.Tensor,
        cols: torch.Tensor,
        starts: torch.Tensor,
    ) -> torch.Tensor:
        hidden = self.model.model(
            input_ids=input_ids, attention_mask=attention_mask, use_cache=False
        ).last_hidden_state
        return self.model.score(hidden[rows, cols]).float().softmax(dim=-1)[:, 1]
