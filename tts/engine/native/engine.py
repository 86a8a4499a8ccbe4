"""The `native` backend: the async front of the engine and its step loop.

`generate` may be awaited from any number of coroutines. Each call queues a request and waits;
one background task steps the engine while there is work: apply new requests and aborts,
schedule, run the model and the sampler on the device thread (so the event loop keeps serving),
then record the new tokens and finish the sequences that are done. A cancelled `generate`
(a cancelled coroutine, a disconnected client) aborts its request, whose blocks are freed
before the next step. A step that raises (a bug no validation caught) fails every request in
flight with that error, streams included, frees their blocks, and the loop goes on serving.

Prompt log-probabilities need the logits of every prompt position, which a prefix-cache hit
never computes: a request that asks for them prefills its prompt without the cache (its blocks
are still cached for others), and the runner returns all of its prefill chunks' logits.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer

from tts.devices import DEVICE_THREAD
from tts.engine.backend import (
    Completion,
    SamplingParams,
    check_prompt_length,
    check_token_ids,
    encode_prompt,
    eos_token_ids,
    truncate_at_stop,
)
from tts.engine.native.model_runner import ModelRunner, SeqChunk
from tts.engine.native.sampler import logprobs_of, sample
from tts.engine.native.scheduler import Batch, Chunk, Scheduler
from tts.engine.native.sequence import Sequence
from tts.errors import TTSError


@dataclass(frozen=True)
class EngineConfig:
    """Sizes of the native engine.

    block_size: tokens per KV block; small blocks let search branches share more.
    num_blocks: KV blocks in the pool; None sizes the pool from kv_cache_gib.
    kv_cache_gib: memory for the KV cache, in GiB, when num_blocks is None; None: 1 GiB on
        CPU, 80% of the accelerator memory left after loading the weights.
    max_num_seqs: most sequences running at once.
    max_num_batched_tokens: most tokens computed in one step (the prefill chunk budget).
    check_integrity: verify the block bookkeeping after every step (tests; slow).
    """

    block_size: int = 16
    num_blocks: int | None = None
    kv_cache_gib: float | None = None
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 2048
    check_integrity: bool = False

    def __post_init__(self) -> None:
        if self.block_size < 1 or (self.num_blocks is not None and self.num_blocks < 1):
            raise ValueError("block_size and num_blocks must be >= 1")
        if (self.kv_cache_gib is not None and self.kv_cache_gib <= 0) or min(
            self.max_num_seqs, self.max_num_batched_tokens
        ) < 1:
            raise ValueError("kv_cache_gib, max_num_seqs and max_num_batched_tokens must be > 0")


@dataclass(eq=False)
class _Request:
    prompt_ids: list[int]
    params: SamplingParams
    seqs: list[Sequence]
    future: asyncio.Future
    progress: asyncio.Event | None = None  # set after each step that grew it, when streamed


class NativeBackend:
    """Paged KV cache, prefix cache and continuous batching over a Hugging Face model folder."""

    def __init__(
        self, model_dir: str | Path, device: torch.device, dtype: torch.dtype, **options: Any
    ) -> None:
        config = EngineConfig(**options)
        self.config = config
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        # Every torch call, loading included, runs on the device thread (see tts.devices).
        self.runner = DEVICE_THREAD.submit(
            ModelRunner,
            Path(model_dir),
            device,
            dtype,
            config.num_blocks,
            config.block_size,
            config.kv_cache_gib,
        ).result()
        self.device = device
        self.max_model_len = self.runner.config.max_position_embeddings
        self.scheduler = self._new_scheduler()
        self.eos_token_ids = eos_token_ids(model_dir, self.tokenizer)
        self._seq_ids = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._new: list[_Request] = []
        self._aborted: list[_Request] = []
        self._active: dict[int, _Request] = {}  # seq_id of each of its sequences -> request

    def _new_scheduler(self) -> Scheduler:
        config = self.config
        return Scheduler(
            self.runner.num_blocks,
            config.block_size,
            config.max_num_seqs,
            config.max_num_batched_tokens,
        )

    def stats(self) -> dict[str, int]:
        """Counters for metrics: KV blocks, prefix hits, preemptions, queue depth."""
        scheduler = self.scheduler
        return {
            **scheduler.cache.stats(),
            **asdict(scheduler.stats),
            "running": len(scheduler.running),
            "waiting": len(scheduler.waiting),
        }

    def update_weights(self, tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Take new weights in process, by Hugging Face names (an RL trainer's
        `state_dict().items()` after each update), and forget the prefix cache: the old weights
        computed its KV. Only between requests."""
        if self._active or self._new or self.scheduler.has_work:
            raise TTSError("the engine's weights can only change while no request is in flight")
        DEVICE_THREAD.submit(self.runner.update_weights, tensors).result()
        self.scheduler.cache.forget_all()

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
                    yield self._completions(request, final=False)
            yield request.future.result()
        finally:
            if not request.future.done():
                self._abort(request)

    def _submit(self, prompt: str | list[int], params: SamplingParams, streamed: bool) -> _Request:
        prompt_ids = encode_prompt(self.tokenizer, prompt)
        check_token_ids(prompt_ids, params, self.runner.config.vocab_size)
        self._check_fits(len(prompt_ids), params)
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            # A new event loop (each asyncio.run makes one): the step task belongs to it. Work
            # left from a closed loop has no one waiting for it.
            if self.scheduler.has_work:
                self._abort_everything()
            self._loop, self._wake = loop, asyncio.Event()
            self._worker = loop.create_task(self._serve())  # held: the loop keeps weak refs
        seqs = [self._sequence(prompt_ids, params, i) for i in range(params.n)]
        progress = asyncio.Event() if streamed else None
        request = _Request(prompt_ids, params, seqs, loop.create_future(), progress)
        self._new.append(request)
        self._wake.set()
        return request

    def _abort(self, request: _Request) -> None:
        self._aborted.append(request)
        self._wake.set()

    def _check_fits(self, num_prompt_tokens: int, params: SamplingParams) -> None:
        check_prompt_length(num_prompt_tokens, self.max_model_len)
        longest = min(num_prompt_tokens + params.max_tokens, self.max_model_len)
        blocks = -(-longest // self.config.block_size)
        if blocks > self.scheduler.cache.pool.num_blocks:
            raise TTSError(
                f"a sequence of {longest} tokens needs {blocks} KV blocks but the pool has "
                f"{self.scheduler.cache.pool.num_blocks}; raise kv_cache_gib or num_blocks"
            )

    def _sequence(self, prompt_ids: list[int], params: SamplingParams, index: int) -> Sequence:
        generator = None
        if params.seed is not None:
            # Sample i of a seeded request draws from seed + i, so the n samples differ.
            generator = torch.Generator(device=self.device)
            generator.manual_seed(params.seed + index)
        # The leader alone computes the prompt's log-probabilities; its siblings fork from it.
        wants_prompt = params.prompt_logprobs is not None and index == 0
        return Sequence(
            seq_id=next(self._seq_ids),
            token_ids=list(prompt_ids),
            num_prompt_tokens=len(prompt_ids),
            params=params,
            generator=generator,
            prompt_logprobs=[None] if wants_prompt else None,
        )

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not (self._new or self._aborted or self.scheduler.has_work):
                await self._wake.wait()
            self._wake.clear()
            try:
                await self._advance(loop)
            except Exception as error:  # a failed step fails everything in flight, not the loop
                self._fail_everything(error)

    async def _advance(self, loop: asyncio.AbstractEventLoop) -> None:
        """One engine step, from taking new requests to finishing those that are done."""
        self._apply_inbox()
        if not self.scheduler.has_work:
            return
        batch = self.scheduler.schedule()
        tokens, logprobs, prompt_logprobs = await loop.run_in_executor(
            DEVICE_THREAD, self._step, batch, self._chunks(batch)
        )
        self.scheduler.postprocess(batch, tokens)
        for chunk, entries in zip(batch.chunks, prompt_logprobs):
            _record_prompt_logprobs(chunk.seq, chunk.start, entries)
        self._finish(batch, logprobs)
        if self.config.check_integrity:
            self.check_integrity()

    def _apply_inbox(self) -> None:
        for request in self._new:
            if not request.future.done():
                self.scheduler.add(request.seqs)
                self._active.update((seq.seq_id, request) for seq in request.seqs)
        self._new = []
        for request in self._aborted:
            if self._active.get(request.seqs[0].seq_id) is request:
                self._forget(request)
                self.scheduler.abort([s for s in request.seqs if not s.is_finished])
        self._aborted = []

    @staticmethod
    def _chunks(batch: Batch) -> list[SeqChunk]:
        """What the runner computes, copied out of the sequences on the loop's thread."""
        return [
            SeqChunk(
                token_ids=c.seq.token_ids[c.start : c.start + c.num_tokens],
                start_pos=c.start,
                block_table=list(c.seq.block_table),
                needs_logits=c.needs_logits,
                all_logits=c.seq.needs_prompt_logits,
            )
            for c in batch.chunks
        ]

    def _step(
        self, batch: Batch, chunks: list[SeqChunk]
    ) -> tuple[list[list[int]], list[list[dict[int, float] | None]], list[list[dict[int, float]]]]:
        """Runs on the device thread: block copies, the forward pass, sampling. Returns the
        sampled tokens and their logprobs per group of `batch.samples`, and per chunk the
        logprobs of the prompt tokens its positions predict (empty unless it asked)."""
        for src, dst in batch.copies:
            self.runner.copy_block(src, dst)
        all_logits = self.runner.run(chunks)
        sample_rows, prompt_logprobs, row = [], [], 0
        for chunk, seq_chunk in zip(batch.chunks, chunks):
            count = (
                len(seq_chunk.token_ids) if seq_chunk.all_logits else int(seq_chunk.needs_logits)
            )
            prompt_logprobs.append(
                _prompt_logprobs(chunk, all_logits[row : row + count])
                if seq_chunk.all_logits
                else []
            )
            if seq_chunk.needs_logits:
                sample_rows.append(row + count - 1)
            row += count
        rows = [r for r, group in zip(sample_rows, batch.samples) for _ in group]
        seqs = [seq for group in batch.samples for seq in group]
        if not seqs:
            return [], [], prompt_logprobs
        logits = all_logits[torch.tensor(rows, device=all_logits.device)]
        tokens = sample(logits, [s.params for s in seqs], [s.generator for s in seqs])
        logprobs = logprobs_of(logits, tokens, [s.params.logprobs for s in seqs])
        flat = tokens.tolist()
        grouped, grouped_logprobs, start = [], [], 0
        for group in batch.samples:
            grouped.append(flat[start : start + len(group)])
            grouped_logprobs.append(logprobs[start : start + len(group)])
            start += len(group)
        return grouped, grouped_logprobs, prompt_logprobs

    def _finish(self, batch: Batch, logprobs: list[list[dict[int, float] | None]]) -> None:
        for group, group_logprobs in zip(batch.samples, logprobs):
            progress = self._active[group[0].seq_id].progress
            if progress is not None:
                progress.set()
            for seq, entry in zip(group, group_logprobs):
                if entry is not None:
                    seq.logprobs.append(entry)
                reason = self._finish_reason(seq)
                if reason is not None:
                    seq.finish_reason = reason
                    if seq in self.scheduler.running:
                        self.scheduler.finish(seq)
                    else:  # a sibling that could not fork yet
                        self.scheduler.abort([seq])
                    self._complete_if_done(seq)

    def _finish_reason(self, seq: Sequence) -> str | None:
        params, token = seq.params, seq.token_ids[-1]
        if token in params.stop_token_ids or (
            token in self.eos_token_ids and not params.ignore_eos
        ):
            return "stop"
        if params.stop:
            # Only the tail can hold a stop string that the previous token did not complete.
            window = max(len(s) for s in params.stop) + 8
            tail = self.tokenizer.decode(seq.output_ids[-window:], skip_special_tokens=True)
            if truncate_at_stop(tail, params.stop)[1] is not None:
                return "stop"
        if len(seq.output_ids) >= params.max_tokens or seq.num_tokens >= self.max_model_len:
            return "length"
        return None

    def _complete_if_done(self, seq: Sequence) -> None:
        request = self._active[seq.seq_id]
        if all(s.finish_reason for s in request.seqs):
            completions = self._completions(request, final=True)  # may fail: still in flight
            self._forget(request)
            if not request.future.done():
                request.future.set_result(completions)
                if request.progress is not None:
                    request.progress.set()

    def _forget(self, request: _Request) -> None:
        for seq in request.seqs:
            self._active.pop(seq.seq_id, None)

    def _completions(self, request: _Request, final: bool) -> list[Completion]:
        prompt_logprobs = request.seqs[0].prompt_logprobs
        return [self._completion(seq, final, prompt_logprobs) for seq in request.seqs]

    def _completion(
        self, seq: Sequence, final: bool, prompt_logprobs: list[dict[int, float] | None] | None
    ) -> Completion:
        text = self.tokenizer.decode(seq.output_ids, skip_special_tokens=True)
        last = seq.token_ids[-1]
        reason = (
            last if last in seq.params.stop_token_ids and last not in self.eos_token_ids else None
        )
        if seq.params.stop and reason is None:
            text, reason = truncate_at_stop(text, seq.params.stop)
        if not final and seq.finish_reason is None:
            text = _settled(text, seq.params.stop)
        return Completion(
            text=text,
            token_ids=list(seq.output_ids),
            finish_reason=seq.finish_reason,
            logprobs=list(seq.logprobs) if seq.params.logprobs is not None else None,
            prompt_tokens=seq.num_prompt_tokens,
            cached_tokens=seq.num_cached_tokens,
            stop_reason=reason,
            prompt_logprobs=list(prompt_logprobs) if prompt_logprobs is not None else None,
        )

    def _fail_everything(self, error: Exception) -> None:
        """Fail every request in flight with `error` (a stream raises it at its next snapshot)
        and free their blocks."""
        for request in self._active.values():
            if not request.future.done():
                request.future.set_exception(error)
            if request.progress is not None:
                request.progress.set()
        try:
            self._abort_everything()
            self.scheduler.pending_copies.clear()  # copy-on-write forks of failed requests
            consistent = self.scheduler.cache.stats()["blocks_in_use"] == 0
        except Exception:
            consistent = False
        if not consistent or self.scheduler.has_work:
            # The step failed halfway through the bookkeeping: what the pool says is in use
            # belongs to no request any more, so start from an empty pool (and prefix cache).
            stats, self.scheduler = self.scheduler.stats, self._new_scheduler()
            self.scheduler.stats = stats

    def _abort_everything(self) -> None:
        for request in {id(r): r for r in self._active.values()}.values():
            self.scheduler.abort([s for s in request.seqs if not s.is_finished])
        self._active.clear()

    def check_integrity(self) -> None:
        """Raise AssertionError if the KV bookkeeping is inconsistent (see PrefixCache)."""
        self.scheduler.cache.check_integrity(s.block_table for s in self.scheduler.running)


def _prompt_logprobs(chunk: Chunk, logits: torch.Tensor) -> list[dict[int, float]]:
    """The logprobs of the prompt tokens that `chunk`'s positions predict: position p's logits
    [rows of `logits`] score token p + 1, while that is still a prompt token."""
    seq = chunk.seq
    targets = seq.token_ids[
        chunk.start + 1 : min(chunk.start + chunk.num_tokens + 1, seq.num_prompt_tokens)
    ]
    if not targets:
        return []
    tokens = torch.tensor(targets, device=logits.device)
    return logprobs_of(logits[: len(targets)], tokens, [seq.params.prompt_logprobs] * len(targets))


def _record_prompt_logprobs(seq: Sequence, start: int, entries: list[dict[int, float]]) -> None:
    """Keep the entries for prompt tokens not yet scored: a preempted sequence recomputes its
    prompt from the start, and the tokens it scored before must not count twice."""
    for offset, entry in enumerate(entries):
        if start + 1 + offset == len(seq.prompt_logprobs):
            seq.prompt_logprobs.append(entry)


def _settled(text: str, stop: tuple[str, ...]) -> str:
    """The part of a growing text that can no longer change: without a trailing half-decoded
    character, and without a tail that might be the start of a stop string."""
    text = text.rstrip("\ufffd")
    held = max((k for s in stop for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
    return text[: len(text) - held]
