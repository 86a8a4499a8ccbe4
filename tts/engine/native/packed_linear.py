"""Linear layers whose weights are reordered once for oneDNN: the fast CPU path for decoding.

On CPU, `F.linear` hands float32 weights to MKL's sgemm, which repacks the whole weight matrix
on every call. For the few-to-few-dozen rows of a decode step over a wide matrix (Qwen2.5's
151,936-row LM head), that made the product several times slower than reading the weights
once. oneDNN with the weight reordered at load time into its blocked layout, as vLLM's CPU
backend and torch.compile's CPU weight freezing both do, avoids the repacking; for bfloat16
it also reaches the AMX tile units where the processor has them. Inference only: the packed
weights are no Parameters, and nothing here runs on an accelerator.
"""

from __future__ import annotations

import torch
from torch import nn

from tts.engine.native.model import CausalLM

# Below about half a million weights oneDNN's per-call cost outweighs the repacking it saves
# (measured here: a 1024 x 192 product ran faster with F.linear, 896 x 896 and larger slower).
MIN_PACKED_WEIGHTS = 2**19


def can_pack(device: torch.device) -> bool:
    return device.type == "cpu" and torch.backends.mkldnn.is_available()


class PackedLinear(nn.Module):
    """y = x W^T + b for x [T, in], with W [out, in] held in oneDNN's layout."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.weight = torch.ops.mkldnn._reorder_linear_weight(weight.detach())
        self.bias = None if bias is None else bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")


def pack_linear_layers(model: CausalLM) -> int:
    """Replace every nn.Linear of `model` with at least MIN_PACKED_WEIGHTS weights by a
    PackedLinear, in place; a tied LM head that large gets a packed copy of the embedding (the
    embedding stays for the lookup). Returns how many layers were packed."""
    packed = 0
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.Linear) and child.weight.numel() >= MIN_PACKED_WEIGHTS:
                setattr(module, name, PackedLinear(child.weight, child.bias))
                packed += 1
    embedding = model.model.embed_tokens.weight
    if model.lm_head is None and embedding.numel() >= MIN_PACKED_WEIGHTS:
        model.lm_head = PackedLinear(embedding, None)
        packed += 1
    return packed
