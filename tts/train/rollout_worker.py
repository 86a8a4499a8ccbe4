"""Rollout workers: engines in processes of their own, placed by Ray, sampling for the trainer.

A `RolloutWorker` is the body of one Ray actor: it loads the model into its engine (the native
one, or vLLM where it is installed) on its own device (one CPU core, or one GPU, each) and
serves `generate` calls from the trainer concurrently, so its engine batches them as an
in-process one does. `WorkerPool` is the trainer's view of its workers: a `Backend`, so the
rollout and the evaluation drive it as they drive the in-process engine (requests dealt
round-robin; results depend only on each request's seed and the weights, not on which worker
took it), plus the weight sync.

Weights travel through Ray's object store, never through a file: the trainer puts the whole
state dict once (`put_weights`, a copy, so the trainer may go on updating its own) and each
worker reads that one object (`load_weights`). On one machine the store is shared memory; across
machines Ray moves the bytes. A collective over a process group holding trainer and workers
(NCCL on GPUs, as verl and TRL do) would skip the store's copy; the store works everywhere,
and the sync time it costs is logged each step (`weight_sync_seconds`).
"""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer

from tts.engine import Completion, SamplingParams, load
from tts.errors import TTSError


class RolloutWorker:
    """One engine on one Ray actor; counts what it generates for the trainer's log."""

    def __init__(self, model: str, backend: str, device: str, options: dict[str, Any]) -> None:
        self.error: TTSError | None = None
        try:
            self.backend = load(model, backend, device=device, **options)
        except (TTSError, TypeError, ValueError) as error:
            # Ray would bury it in a dead-actor message: the trainer's first call raises it.
            self.error = TTSError(f"a rollout worker cannot start its {backend} engine: {error}")
        self.tokens, self.busy_seconds = 0, 0.0
        self.prompt_tokens, self.cached_tokens = 0, 0
        self._in_flight, self._busy_since = 0, 0.0

    def pid(self) -> int:
        """The worker's process id (what a test kills), once its engine is loaded."""
        if self.error is not None:
            raise self.error
        return os.getpid()

    async def generate(self, prompt: str | list[int], params: SamplingParams) -> list[Completion]:
        if self._in_flight == 0:
            self._busy_since = time.perf_counter()
        self._in_flight += 1
        try:
            completions = await self.backend.generate(prompt, params)
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self.busy_seconds += time.perf_counter() - self._busy_since
        self.tokens += sum(len(c.token_ids) for c in completions)
        # Per sample, as vLLM counts them: the samples after a request's first share its prompt.
        self.prompt_tokens += sum(c.prompt_tokens for c in completions)
        self.cached_tokens += sum(c.cached_tokens for c in completions)
        return completions

    async def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        """Take the trainer's new weights."""
        self.backend.update_weights(weights.items())

    async def stats(self) -> dict[str, float]:
        """Since the worker started: tokens generated, seconds spent generating, prompt tokens
        and those of them the prefix cache held."""
        return {
            "tokens": self.tokens,
            "busy_seconds": self.busy_seconds,
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
        }


def start_ray(address: str | None, cpus: float) -> bool:
    """Join the Ray cluster at `address` (`auto`: the one this machine belongs to), or start a
    local Ray with `cpus` CPUs for the run when `address` is None; whether Ray was started (or
    joined) here, and so is to be shut down after."""
    try:
        import ray
    except ImportError:
        raise TTSError("rollout workers need Ray: pip install 'tts[ray]'") from None
    if ray.is_initialized():
        return False
    if address is not None:
        try:
            ray.init(address=address, logging_level="warning")
        except ConnectionError as error:
            raise TTSError(f"cannot reach the Ray cluster at {address}: {error}") from None
        return True
    ray.init(num_cpus=max(1, int(cpus + 0.999)), include_dashboard=False, logging_level="warning")
    return True


class WorkerPool:
    """The trainer's rollout workers as one `Backend`, and the weight sync to them."""

    def __init__(
        self,
        model: str | Path,
        count: int,
        address: str | None,
        device_type: str,
        backend: str,
        options: dict[str, Any],
    ) -> None:
        import ray

        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self._started_ray = start_ray(address, count)
        # On a worker, "cuda" is the one GPU Ray gave it.
        gpus = 1.0 if device_type == "cuda" else 0.0
        actor = ray.remote(RolloutWorker).options(num_cpus=1, num_gpus=gpus, max_concurrency=4096)
        self.workers = [
            actor.remote(str(model), backend, device_type, options) for _ in range(count)
        ]
        self._next = itertools.cycle(self.workers)
        self.call(worker.pid.remote() for worker in self.workers)  # loaded, or the error now

    @staticmethod
    def call(refs: Any) -> list[Any]:
        """The results of Ray calls; a worker that died is a TTSError naming it."""
        import ray

        try:
            return ray.get(list(refs))
        except ray.exceptions.RayTaskError as error:
            raise error.cause if isinstance(error.cause, TTSError) else error from None
        except ray.exceptions.RayActorError as error:
            raise TTSError(f"a rollout worker died: {error}") from None

    async def generate(self, prompt: str | list[int], params: SamplingParams) -> list[Completion]:
        import ray

        try:
            return await next(self._next).generate.remote(prompt, params)
        except ray.exceptions.RayActorError as error:
            raise TTSError(f"a rollout worker died: {error}") from None

    def put_weights(self, weights: dict[str, torch.Tensor]) -> Any:
        """A copy of `weights` in Ray's object store, for `load_weights`."""
        import ray

        return ray.put({name: tensor.detach().cpu() for name, tensor in weights.items()})

    def load_weights(self, stored: Any) -> None:
        """Every worker takes the weights `put_weights` stored (returns once all have)."""
        self.call(worker.load_weights.remote(stored) for worker in self.workers)

    def stats(self) -> dict[str, float]:
        """The workers' counters summed, and their rates: tokens per second of generation (per
        worker, averaged) and the prefix-cache hit rate."""
        each = self.call(worker.stats.remote() for worker in self.workers)
        total = {key: sum(s[key] for s in each) for key in ("tokens", "busy_seconds")}
        hits = sum(s["cached_tokens"] for s in each)
        prompts = sum(s["prompt_tokens"] for s in each)
        return total | {
            "worker_tokens_per_s": total["tokens"] / max(total["busy_seconds"], 1e-9),
            "prefix_hit_rate": hits / max(prompts, 1),
        }

    def close(self) -> None:
        """Stop the workers."""
        import ray

        for worker in self.workers:
            ray.kill(worker)
        if self._started_ray:
            ray.shutdown()
