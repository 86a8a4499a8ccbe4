"""The model runner: weights, the paged KV cache, and one forward pass per engine step.

This is the only part of the native engine that touches the device. The scheduler hands it a
list of `SeqChunk`s (prefill chunks and decode steps mixed freely); it flattens them into one
token batch, runs the model once, and returns logits only for the chunks that asked for them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import AutoConfig, PretrainedConfig

from tts.engine.native.attention import AttentionMetadata
from tts.engine.native.model import CausalLM, FusedLinear, head_dim_of
from tts.engine.native.packed_linear import can_pack, pack_linear_layers
from tts.errors import TTSError

SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "qwen3")


@dataclass
class SeqChunk:
    """One sequence's work in one engine step."""

    token_ids: list[int]  # the new tokens whose KV to compute now (len >= 1)
    start_pos: int  # absolute position of token_ids[0] = tokens already in the cache
    block_table: list[int]  # block ids covering positions [0, start_pos + len(token_ids))
    needs_logits: bool  # return the logits of the last of token_ids
    all_logits: bool = False  # return the logits of every one of token_ids instead


def check_supported(config: PretrainedConfig) -> None:
    """Raise TTSError for a model this engine cannot run faithfully."""
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise TTSError(
            f"model_type {config.model_type!r} is not supported by the native engine; "
            f"supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    if "sliding_attention" in (getattr(config, "layer_types", None) or ()):
        raise TTSError("sliding-window attention is not supported by the native engine")


def checkpoint_files(model_dir: Path) -> list[Path]:
    """The safetensors files of a Hugging Face folder, single-file or sharded."""
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        return [model_dir / name for name in sorted(set(weight_map.values()))]
    single = model_dir / "model.safetensors"
    if single.exists():
        return [single]
    raise TTSError(f"{model_dir} has no model.safetensors or model.safetensors.index.json")


def checkpoint_tensors(model_dir: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """Every (name, tensor) of a Hugging Face folder's safetensors, file by file."""
    for path in checkpoint_files(model_dir):
        with safe_open(path, framework="pt", device="cpu") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open is not iterable)
                yield name, f.get_tensor(name)


def copy_weights(model: CausalLM, tensors: Iterable[tuple[str, torch.Tensor]], source: str) -> None:
    """Copy every (Hugging Face name, tensor) into the parameter it belongs to, casting to its
    dtype: the parameter of the same name, or the rows of a fused projection (q/k/v, gate/up)
    that it fills.

    Tensors the model has no parameter for (a tied checkpoint's lm_head, old rotary buffers)
    are skipped; a tensor `source` lacks, or a shape mismatch, is an error.
    """
    targets = {name: (param, slice(None)) for name, param in model.named_parameters()}
    for name, module in model.named_modules():
        if isinstance(module, FusedLinear):
            parent = name.rsplit(".", 1)[0]
            for kind, param in module.named_parameters():
                del targets[f"{name}.{kind}"]
                for part in module.parts:
                    targets[f"{parent}.{part}.{kind}"] = (param, module.rows(part))
    missing = set(targets)
    with torch.no_grad():
        for name, tensor in tensors:
            if name not in targets:
                continue
            param, rows = targets[name]
            target = param.data[rows]
            if tensor.shape != target.shape:
                raise TTSError(
                    f"{source}: {name} has shape {tuple(tensor.shape)}, "
                    f"the config implies {tuple(target.shape)}"
                )
            target.copy_(tensor)
            missing.discard(name)
    if missing:
        raise TTSError(f"{source} is missing weights: {', '.join(sorted(missing))}")


class ModelRunner:
    """Owns the model and its KV cache; `run` does one step's forward over many sequences.

    The cache holds num_blocks blocks of block_size token slots per layer; a token at absolute
    position p of a sequence lives in slot block_table[p // block_size] * block_size
    + p % block_size. Which blocks a sequence owns is the caller's business.
    """

    def __init__(
        self,
        model_dir: Path,
        device: torch.device,
        dtype: torch.dtype,
        num_blocks: int | None,
        block_size: int,
        kv_cache_gib: float | None = None,
    ) -> None:
        model_dir = Path(model_dir)
        self.config = AutoConfig.from_pretrained(model_dir)
        check_supported(self.config)
        self.device = torch.device(device)
        self.dtype = dtype
        self.block_size = block_size
        self.model = self._empty_model()
        copy_weights(self.model, checkpoint_tensors(model_dir), str(model_dir))
        # What a decode step reads: every weight once (a tied embedding as the LM head).
        self.weight_bytes = sum(p.numel() * p.element_size() for p in self.model.parameters())
        self.packed = self._ready(self.model)
        self.num_blocks = num_blocks or self._pool_size(kv_cache_gib)
        self.kv_cache: torch.Tensor | None = self._new_kv_cache()

    def _new_kv_cache(self) -> torch.Tensor:
        c = self.config
        shape = (2, c.num_hidden_layers, self.num_blocks, self.block_size)
        return torch.zeros(
            (*shape, c.num_key_value_heads, head_dim_of(c)), device=self.device, dtype=self.dtype
        )

    @property
    def kv_cache_bytes(self) -> int:
        """Bytes the KV cache holds on the device now (0 while released)."""
        return 0 if self.kv_cache is None else self.kv_cache.nbytes

    def release_kv_cache(self) -> None:
        """Drop the KV cache, and on an accelerator hand its memory back to the device, so that
        a trainer beside the engine has it for its update (vLLM's sleep, verl's offload). What
        the cache held is lost: the caller must forget every block first."""
        self.kv_cache = None
        if self.device.type != "cpu":
            torch.accelerator.empty_cache()

    def reclaim_kv_cache(self) -> None:
        """Allocate the KV cache again, with the same number of blocks, after a release."""
        if self.kv_cache is None:
            self.kv_cache = self._new_kv_cache()

    def _empty_model(self) -> CausalLM:
        # Built on the meta device so no time goes into random init of weights about to load.
        with torch.device("meta"):
            model = CausalLM(self.config)
        model = model.to(dtype=self.dtype).to_empty(device=self.device)
        model.model.rotary_emb.reset_parameters()
        return model

    def _ready(self, model: CausalLM) -> bool:
        """Put `model` in eval mode and pack its large layers where oneDNN runs them; say
        whether any was packed."""
        model.eval()
        return can_pack(self.device) and pack_linear_layers(model) > 0

    def update_weights(self, tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Take new weights, by their Hugging Face names (a trainer's `state_dict().items()`):
        copied in place, or, where the layers are packed for oneDNN (CPU), into a model built
        afresh and packed again (a packed weight is no parameter to copy into)."""
        model = self._empty_model() if self.packed else self.model
        copy_weights(model, tensors, "the new weights")
        if self.packed:
            self._ready(model)
        self.model = model

    @staticmethod
    def kv_bytes_per_block(config: PretrainedConfig, block_size: int, dtype: torch.dtype) -> int:
        """Bytes one block takes across all layers, keys and values both."""
        per_token = config.num_hidden_layers * config.num_key_value_heads * head_dim_of(config)
        return 2 * per_token * block_size * dtype.itemsize

    def _pool_size(self, kv_cache_gib: float | None) -> int:
        """Blocks that fit in kv_cache_gib GiB; by default 1 GiB on CPU and, on an accelerator,
        80% of the memory left once the weights are loaded (the rest is for activations)."""
        if kv_cache_gib is not None:
            budget = int(kv_cache_gib * 2**30)
        elif self.device.type == "cuda":
            budget = int(torch.cuda.mem_get_info(self.device)[0] * 0.8)
        else:
            budget = 2**30
        per_block = self.kv_bytes_per_block(self.config, self.block_size, self.dtype)
        return max(budget // per_block, 1)

    def run(self, chunks: list[SeqChunk]) -> torch.Tensor:
        """Compute the chunks' KV, and float32 logits [rows, vocab]: in chunk order, one row
        per token of an `all_logits` chunk, else one for a chunk that `needs_logits`."""
        if not chunks:
            raise ValueError("a step needs at least one chunk")
        if self.kv_cache is None:
            raise TTSError("the KV cache is released; reclaim it before running the model")
        input_ids, positions, logit_rows = [], [], []
        bs = self.block_size
        for chunk in chunks:
            end = chunk.start_pos + len(chunk.token_ids)
            if not chunk.token_ids or len(chunk.block_table) * bs < end:
                raise ValueError(
                    f"chunk needs 1+ tokens and blocks for {end} positions, got "
                    f"{len(chunk.token_ids)} tokens and {len(chunk.block_table)} blocks"
                )
            input_ids += chunk.token_ids
            positions += range(chunk.start_pos, end)
            if chunk.all_logits:
                logit_rows += range(len(input_ids) - len(chunk.token_ids), len(input_ids))
            elif chunk.needs_logits:
                logit_rows.append(len(input_ids) - 1)
        meta = AttentionMetadata.build(
            query_lens=[len(chunk.token_ids) for chunk in chunks],
            context_lens=[chunk.start_pos + len(chunk.token_ids) for chunk in chunks],
            block_tables=[chunk.block_table for chunk in chunks],
            block_size=bs,
            device=self.device,
        )
        with torch.inference_mode():
            hidden = self.model(
                self._tensor(input_ids, torch.int64),
                self._tensor(positions, torch.int64),
                self.kv_cache,
                meta,
            )
            return self.model.compute_logits(hidden[self._tensor(logit_rows, torch.int64)]).float()

    def copy_block(self, src: int, dst: int) -> None:
        """Copy block src's keys and values to block dst in every layer (copy-on-write forks)."""
        self.kv_cache[:, :, dst].copy_(self.kv_cache[:, :, src])

    def _tensor(self, data: list, dtype: torch.dtype) -> torch.Tensor:
        return torch.tensor(data, dtype=dtype, device=self.device)
