"""The `native` backend: the async front of the engine and its step loop.

`generate` may be awaited from any number of coroutines. Each call queues a request and waits;
one background task steps the engine core (`engine_core.py`) while there is work: apply new
requests and aborts, schedule, run the model and the sampler on the device thread (so the event
loop keeps serving), then record the new tokens and finish the sequences that are done. Requests
join and leave only between steps, so the core's bookkeeping never changes under a step the
device is running. A cancelled `generate` (a cancelled coroutine, a disconnected client) aborts
its request, whose blocks are freed before the next step. A step that raises (a bug no
validation caught) fails every request in flight with that error, streams included, frees their
blocks, and the loop goes on serving.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tts.devices import DEVICE_THREAD
from tts.engine.backend import Completion, SamplingParams, encode_prompt
from tts.engine.native.config import EngineConfig
from tts.engine.native.engine_core import EngineCore, StepOutput
from tts.errors import TTSError


@dataclass(eq=False)
class _Request:
    prompt_ids: list[int]
    params: SamplingParams
    future: asyncio.Future
    progress: asyncio.Event | None = None  # set after each step that grew it, when streamed
    request_id: int | None = None  # the core's, once the request has joined it


class NativeBackend:
    """Paged KV cache, prefix cache and continuous batching over a Hugging Face model folder."""

    def __init__(
        self, model_dir: str | Path, device: torch.device, dtype: torch.dtype, **options: Any
    ) -> None:
        self.config = engine_config(options)
        # Every torch call, loading included, runs on the device thread (see tts.devices).
        self.core = DEVICE_THREAD.submit(EngineCore, model_dir, device, dtype, self.config).result()
        self.tokenizer = self.core.tokenizer
        self.runner = self.core.runner
        self.device = device
        self.max_model_len = self.core.max_model_len
        self.eos_token_ids = self.core.eos_token_ids
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._new: list[_Request] = []
        self._aborted: list[_Request] = []
        self._active: dict[int, _Request] = {}  # request id -> request, while in the core

    def stats(self) -> dict[str, int]:
        """Counters for metrics: KV blocks and bytes, prefix hits, preemptions, queue depth,
        and speculative decoding's steps, drafted and kept tokens."""
        return self.core.stats()

    def update_weights(self, tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Take new weights in process, by Hugging Face names (an RL trainer's
        `state_dict().items()` after each update), and forget the prefix cache: the old weights
        computed its KV. Only between requests."""
        if self._new or self.core.has_work:
            raise TTSError("the engine's weights can only change while no request is in flight")
        DEVICE_THREAD.submit(self.core.update_weights, tensors).result()

    def release_memory(self) -> None:
        """Free the KV cache's device memory while a trainer on the same device updates the
        weights (vLLM's sleep, verl's offload); the prefix cache is forgotten with it. Only
        between requests; a request before `reclaim_memory` is refused with a TTSError."""
        if self._new or self.core.has_work:
            raise TTSError("the engine's memory can only be released while no request is in flight")
        DEVICE_THREAD.submit(self.core.release_memory).result()

    def reclaim_memory(self) -> None:
        """Allocate the KV cache again, as large as before, after `release_memory`."""
        DEVICE_THREAD.submit(self.core.reclaim_memory).result()

    async def generate(self, prompt: str | list[int], params: SamplingParams) -> list[Completion]:
        request = self._submit(prompt, params, streamed=False)
        try:
            return await request.future
        except asyncio.CancelledError:
            self._abort(request)
            raise

    async def stream(
        self, prompt: str | list[int], params: SamplingParams
    ) -> AsyncIterator[list[Completion]]:
        """The `params.n` completions as they grow: a snapshot after every engine step that
        added tokens to them (finish_reason None while one still grows, text that could yet be
        the start of a stop string held back), then the final completions. Closing the iterator
        early (a client that went away) aborts the request."""
        request = self._submit(prompt, params, streamed=True)
        try:
            while not request.future.done():
                await request.progress.wait()
                request.progress.clear()
                if not request.future.done():
                    yield self.core.completions(request.request_id)
            yield request.future.result()
        finally:
            if not request.future.done():
                self._abort(request)

    def _submit(self, prompt: str | list[int], params: SamplingParams, streamed: bool) -> _Request:
        prompt_ids = encode_prompt(self.tokenizer, prompt)
        self.core.check(prompt_ids, params)
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            # A new event loop (each asyncio.run makes one): the step task belongs to it. Work
            # left from a closed loop has no one waiting for it.
            if self.core.has_work:
                self._active.clear()
                self.core.abort_all()
            self._loop, self._wake = loop, asyncio.Event()
            self._worker = loop.create_task(self._serve())  # held: the loop keeps weak refs
        progress = asyncio.Event() if streamed else None
        request = _Request(prompt_ids, params, loop.create_future(), progress)
        self._new.append(request)
        self._wake.set()
        return request

    def _abort(self, request: _Request) -> None:
        self._aborted.append(request)
        self._wake.set()

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not (self._new or self._aborted or self.core.has_work):
                await self._wake.wait()
            self._wake.clear()
            try:
                await self._advance(loop)
            except Exception as error:  # a failed step fails everything in flight, not the loop
                self._fail_everything(error)

    async def _advance(self, loop: asyncio.AbstractEventLoop) -> None:
        """One engine step, from taking new requests to finishing those that are done."""
        self._apply_inbox()
        if not self.core.has_work:
            return
        batch = self.core.schedule()
        sampled = await loop.run_in_executor(DEVICE_THREAD, self.core.execute, batch)
        self._deliver(self.core.postprocess(batch, sampled))

    def _apply_inbox(self) -> None:
        for request in self._new:
            if not request.future.done():
                request.request_id = self.core.add(request.prompt_ids, request.params)
                self._active[request.request_id] = request
        self._new = []
        for request in self._aborted:
            if self._active.get(request.request_id) is request:
                del self._active[request.request_id]
                self.core.abort(request.request_id)
        self._aborted = []

    def _deliver(self, output: StepOutput) -> None:
        """Wake the streams that grew and hand the finished requests their completions."""
        for request_id in output.grown:
            progress = self._active[request_id].progress
            if progress is not None:
                progress.set()
        for request_id, completions in output.finished.items():
            request = self._active.pop(request_id)
            if not request.future.done():
                request.future.set_result(completions)
                if request.progress is not None:
                    request.progress.set()

    def _fail_everything(self, error: Exception) -> None:
        """Fail every request in flight with `error` (a stream raises it at its next snapshot)
        and free their blocks."""
        for request in self._active.values():
            if not request.future.done():
                request.future.set_exception(error)
            if request.progress is not None:
                request.progress.set()
        self._active.clear()
        self.core.abort_all()

    def check_integrity(self) -> None:
        """Raise AssertionError if the KV bookkeeping is inconsistent (see PrefixCache)."""
        self.core.check_integrity()


def engine_config(options: dict[str, Any]) -> EngineConfig:
    """The engine's config from backend options, or a one-line error naming what is wrong."""
    known = [field.name for field in dataclasses.fields(EngineConfig)]
    if unknown := sorted(set(options) - set(known)):
        raise TTSError(
            f"unknown native engine option {', '.join(unknown)}; choose from {', '.join(known)}"
        )
    try:
        return EngineConfig(**options)
    except (TypeError, ValueError) as error:
        raise TTSError(f"native engine options: {error}") from None
