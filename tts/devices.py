"""Where models run: device and dtype names, and the one thread that drives them.

Every torch call of tts's models (the engines' steps, the PRM scorers' forwards, model loading)
runs on `DEVICE_THREAD`, so the asyncio event loop stays free and the process drives torch from
a single thread. On CPU, OpenMP/MKL thread pools started from two threads fight over the cores:
measured here, engine steps ran 4-8x slower once a second thread had run torch work.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch

from tts.errors import TTSError

DEVICE_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tts-device")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The named device, or CUDA when there is one, else CPU."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """The named dtype, or float32 on CPU (fast and exact there) and bfloat16 elsewhere."""
    if dtype is None:
        return torch.float32 if device.type == "cpu" else torch.bfloat16
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise TTSError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
        return DTYPES[dtype]
    return dtype
