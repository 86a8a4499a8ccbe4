"""Generation backends behind one interface: `load()` one, then `await backend.generate(...)`."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch

from tts.devices import resolve_device, resolve_dtype
from tts.engine.backend import Backend, Completion, SamplingParams
from tts.errors import TTSError
from tts.models.builtin import resolve_model

__all__ = ["Backend", "Completion", "SamplingParams", "load", "BACKENDS"]

# name -> "module:class"; imported on demand so that a backend's optional dependencies are only
# needed by the users who pick it.
BACKENDS = {
    "native": "tts.engine.native.engine:NativeBackend",
    "hf": "tts.engine.hf:HFBackend",
    "remote": "tts.engine.remote:RemoteBackend",
    "vllm": "tts.engine.vllm:VLLMBackend",
}


def load(
    model: str | Path,
    backend: str = "native",
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    tokenizer: str | Path | None = None,
    **opts: Any,
) -> Backend:
    """Load `model` (a Hugging Face folder; for `remote`, the server's URL) into the named backend.

    device: defaults to CUDA when there is one, else CPU.
    dtype: "float32", "bfloat16" or "float16"; defaults to float32 on CPU and bfloat16 elsewhere.
    tokenizer: `remote` only: a folder holding the served model's tokenizer (its chat template).
        Other backends read the model folder's own, and refuse another rather than mismatch it.
    opts: passed to the backend's constructor (e.g. `max_batch_size`).
    """
    if backend not in BACKENDS:
        raise TTSError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if tokenizer is not None and backend != "remote":
        raise TTSError(
            f"a tokenizer folder is for the remote backend; the {backend} backend uses the "
            "model folder's own"
        )
    module_name, class_name = BACKENDS[backend].split(":")
    backend_class = getattr(importlib.import_module(module_name), class_name)
    if backend == "remote":  # model is a URL: the server owns the weights, device and dtype
        return backend_class(str(model), tokenizer=tokenizer, **opts)
    path = resolve_model(model)
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    return backend_class(path, device=device, dtype=dtype, **opts)
