"""The `vllm` backend's options as vLLM's engine configuration.

tts sizes every engine with the same few options (block_size, kv_cache_gib, max_num_seqs,
max_num_batched_tokens, max_model_len); this turns them into vLLM's `AsyncEngineArgs` and the
`VllmConfig` they make, with the defaults and workarounds that vLLM 0.32's CPU build needs, and
refuses in one line what vLLM would otherwise refuse later, in a worker process's traceback.
It imports vLLM, an optional extra: only `tts.engine.vllm` imports it, inside its import guard.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from transformers import AutoConfig
from vllm.config import SchedulerConfig, VllmConfig
from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.platforms import current_platform
from vllm.usage.usage_lib import UsageContext

from tts.errors import TTSError, invalid_options

# vLLM's own CPU default reserves gpu_memory_utilization (0.9) of the NUMA node's memory.
CPU_KV_CACHE_GIB = 1.0


def engine_config(
    model_dir: str | Path,
    device: torch.device,
    dtype: torch.dtype,
    block_size: int | None,
    kv_cache_gib: float | None,
    max_num_seqs: int | None,
    max_num_batched_tokens: int | None,
    max_model_len: int | None,
    enforce_eager: bool,
    engine_args: dict[str, Any],
) -> tuple[AsyncEngineArgs, VllmConfig]:
    """vLLM's engine arguments and config for the backend's options (each documented at
    `VLLMBackend`), or a one-line TTSError naming what is wrong with them."""
    device = torch.device(device)
    if device.type != current_platform.device_type:
        raise TTSError(f"this vLLM build runs on {current_platform.device_type}, not {device.type}")
    engine_args = dict(engine_args)
    if device.type == "cpu":
        _check_cpu_kernels(model_dir, block_size)
        kv_cache_gib = CPU_KV_CACHE_GIB if kv_cache_gib is None else kv_cache_gib
        if "enable_chunked_prefill" not in engine_args:
            # vLLM 0.32's CPU worker dies ("CPU Generator does not use offset") when a
            # seeded request's prompt is split over steps: prefill each prompt in one step.
            engine_args["enable_chunked_prefill"] = False
            longest = max_model_len or AutoConfig.from_pretrained(model_dir).max_position_embeddings
            default = SchedulerConfig.DEFAULT_MAX_NUM_BATCHED_TOKENS  # as vLLM does it for MLA
            max_num_batched_tokens = max(max_num_batched_tokens or default, longest)
    if kv_cache_gib is not None and kv_cache_gib <= 0:
        raise TTSError(f"kv_cache_gib must be > 0, got {kv_cache_gib}")
    sizes = {
        "block_size": block_size,
        "max_num_seqs": max_num_seqs,
        "max_num_batched_tokens": max_num_batched_tokens,
        "max_model_len": max_model_len,
        "kv_cache_memory_bytes": None if kv_cache_gib is None else int(kv_cache_gib * 2**30),
        "device_ids": None if device.index is None else [device.index],
    }
    args = {
        "model": str(model_dir),
        "dtype": str(dtype).removeprefix("torch."),
        "enforce_eager": enforce_eager,
        "enable_prefix_caching": True,
        # Logprobs of the model's own distribution, before temperature and top-p.
        "logprobs_mode": "raw_logprobs",
        "disable_log_stats": True,  # a log line every few seconds otherwise
        # What an RL trainer's weight sync calls in each worker (`update_weights`).
        "worker_extension_cls": "tts.engine.vllm_weights.WeightLoader",
        **{k: v for k, v in sizes.items() if v is not None},
        **engine_args,
    }
    try:
        vllm_args = AsyncEngineArgs(**args)
        return vllm_args, vllm_args.create_engine_config(UsageContext.ENGINE_CONTEXT)
    except TypeError as error:  # an unknown keyword
        raise TTSError(f"bad vllm backend option: {error}") from None
    except ValidationError as error:
        raise invalid_options("vllm backend options", error) from None
    except ValueError as error:
        raise TTSError(f"bad vllm backend options: {' '.join(str(error).split())}") from None


def _check_cpu_kernels(model_dir: str | Path, block_size: int | None) -> None:
    """vLLM's CPU attention kernels exist for a few head sizes and block sizes only: refuse
    others here, in one line, rather than in a worker process's traceback."""
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    config = AutoConfig.from_pretrained(model_dir)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    supported = CPUAttentionBackend.get_supported_head_sizes()
    if head_dim not in supported:
        raise TTSError(
            f"vLLM's CPU attention needs a head_dim in {supported}; this model's is {head_dim}"
        )
    (unit,) = CPUAttentionBackend.get_supported_kernel_block_sizes()  # MultipleOf(32)
    if block_size is not None and block_size % unit.base:
        raise TTSError(
            f"vLLM's CPU attention needs a block_size that is a multiple of {unit.base}, "
            f"got {block_size}"
        )
