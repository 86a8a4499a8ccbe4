"""Llama, Qwen2/Qwen2.5 and Qwen3 dense decoders in plain PyTorch, attending over a paged KV cache.

The modules mirror the Hugging Face ones weight for weight (same parameter names, so a
checkpoint loads by name, except that q/k/v and gate/up are stacked into one `FusedLinear`
each, which loading fills from the separate tensors) but take a flat batch: every tensor has
the tokens of all sequences in one step laid end to end on dim 0, and attention alone splits
them per sequence. The paged attention lives in its own module (`attention.py`), so faster
kernels (FlexAttention, Triton) can replace it on CUDA without touching the rest.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig
from transformers.activations import ACT2FN
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from tts.engine.native.attention import AttentionMetadata, paged_attention, write_kv
from tts.errors import TTSError

# Types whose inverse frequencies are fixed at load time; "dynamic" and "longrope" change them
# with the sequence length, which a shared paged cache cannot follow.
ROPE_TYPES = ("default", "linear", "llama3", "yarn")


def head_dim_of(config: PretrainedConfig) -> int:
    """Per-head width: Qwen3 sets it apart from hidden_size / num_attention_heads."""
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


class RMSNorm(nn.Module):
    """Root-mean-square norm, computed in float32 as Hugging Face does, then cast back."""

    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


class RotaryEmbedding(nn.Module):
    """cos and sin [T, D] for each token's absolute position, as LlamaRotaryEmbedding makes them.

    inv_freq stays float32 whatever the model dtype; call reset_parameters once the module sits
    on its device (the model is built on the meta device and materialised empty).
    """

    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__()
        self.config = config
        self.rope_type = config.rope_parameters["rope_type"]
        if self.rope_type not in ROPE_TYPES:
            raise TTSError(
                f"rope_type {self.rope_type!r} is not supported; use one of {ROPE_TYPES}"
            )
        self.register_buffer("inv_freq", torch.empty(head_dim_of(config) // 2), persistent=False)
        self.attention_scaling = 1.0

    def reset_parameters(self) -> None:
        if self.rope_type == "default":
            dim = head_dim_of(self.config)
            base = self.config.rope_parameters["rope_theta"]
            inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
            self.attention_scaling = 1.0
        else:
            inv_freq, self.attention_scaling = ROPE_INIT_FUNCTIONS[self.rope_type](self.config)
        self.inv_freq = inv_freq.to(device=self.inv_freq.device, dtype=torch.float)

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        freqs = positions[:, None].float() * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = emb.cos() * self.attention_scaling
        sin = emb.sin() * self.attention_scaling
        return cos.to(dtype), sin.to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [T, H, D] by cos, sin [T, D] (the rotate-half layout Llama and Qwen use)."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos[:, None] + torch.cat((-x2, x1), dim=-1) * sin[:, None]


class FusedLinear(nn.Linear):
    """Projections of one input stacked in one matrix (q, k and v; gate and up), so a step runs
    one product instead of several. Checkpoints keep them apart: `parts` names them, in order,
    with their output sizes, and loading copies each into its rows (`rows`)."""

    def __init__(self, in_features: int, parts: dict[str, int], bias: bool) -> None:
        super().__init__(in_features, sum(parts.values()), bias=bias)
        self.parts = parts

    def rows(self, part: str) -> slice:
        start = 0
        for name, size in self.parts.items():
            if name == part:
                return slice(start, start + size)
            start += size
        raise KeyError(part)


class Attention(nn.Module):
    """Grouped-query self-attention; Qwen2 always biases q/k/v, Qwen3 norms q and k per head."""

    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = head_dim_of(config)
        self.scale = self.head_dim**-0.5
        bias = getattr(config, "attention_bias", False)
        qkv_bias = bias or config.model_type == "qwen2"
        q_size, kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        self.sizes = [q_size, kv_size, kv_size]
        parts = dict(zip(("q_proj", "k_proj", "v_proj"), self.sizes))
        self.qkv_proj = FusedLinear(config.hidden_size, parts, bias=qkv_bias)
        self.o_proj = nn.Linear(q_size, config.hidden_size, bias=bias)
        self.qk_norm = config.model_type == "qwen3"
        if self.qk_norm:
            self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        q, k, v = self.qkv_proj(x).split(self.sizes, dim=-1)
        q = q.view(-1, self.num_heads, self.head_dim)
        k = k.view(-1, self.num_kv_heads, self.head_dim)
        v = v.view(-1, self.num_kv_heads, self.head_dim)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        write_kv(k, v, k_cache, v_cache, meta.slot_mapping)
        o = paged_attention(q, k_cache, v_cache, meta, self.scale)
        return self.o_proj(o.flatten(1))


class MLP(nn.Module):
    """Gated feed-forward: down(act(gate(x)) * up(x)), gate and up in one product."""

    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__()
        bias = getattr(config, "mlp_bias", False)
        parts = {"gate_proj": config.intermediate_size, "up_proj": config.intermediate_size}
        self.gate_up_proj = FusedLinear(config.hidden_size, parts, bias=bias)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=bias)
        self.act = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(self.act(gate) * up)


class DecoderLayer(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__()
        self.self_attn = Attention(config)
        self.mlp = MLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), rope, k_cache, v_cache, meta)
        return x + self.mlp(self.post_attention_layernorm(x))


class DecoderModel(nn.Module):
    """Embedding, decoder layers and final norm: the checkpoint's `model.*` weights."""

    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(config)

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        kv_cache: torch.Tensor,
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        """input_ids, positions [T] -> hidden states [T, hidden_size], writing K/V to kv_cache.

        kv_cache: [2, num_layers, num_blocks, block_size, Hkv, D], keys then values.
        """
        x = self.embed_tokens(input_ids)
        rope = self.rotary_emb(positions, x.dtype)
        for i, layer in enumerate(self.layers):
            x = layer(x, rope, kv_cache[0, i], kv_cache[1, i], meta)
        return self.norm(x)


class CausalLM(nn.Module):
    """The decoder plus the LM head; tied checkpoints reuse the embedding as the head (lm_head
    None), unless a packed copy of it was made for the CPU (see `packed_linear`)."""

    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__()
        self.model = DecoderModel(config)
        self.lm_head: nn.Module | None = None
        if not config.tie_word_embeddings:
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        kv_cache: torch.Tensor,
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        return self.model(input_ids, positions, kv_cache, meta)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [N, hidden_size] -> logits [N, vocab] in the model dtype."""
        if self.lm_head is None:
            return F.linear(hidden, self.model.embed_tokens.weight)
        return self.lm_head(hidden)
