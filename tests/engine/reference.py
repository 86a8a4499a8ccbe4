"""Ground truth the backends' scores are checked against: transformers on the same folder."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM


def transformers_prompt_logprobs(model_dir: str | Path, ids: list[int]) -> list[float]:
    """Each prompt token's log-probability given the ones before it (from the second token on),
    from one float32 forward pass of `AutoModelForCausalLM`."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with torch.no_grad():
        logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
    return [logprobs[i - 1, ids[i]].item() for i in range(1, len(ids))]
