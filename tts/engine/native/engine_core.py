"""The native engine's synchronous core: requests in, one step at a time, completions out.

A step is nano-vllm's: schedule, run the model, sample, postprocess; then the sequences that
are done finish (`stop.py` says when) and their requests' completions come out. `step()` does
all of it on the calling thread, with no event loop, so tests and offline callers drive the
engine in a plain loop:

    request_id = core.add(prompt_ids, params)
    while core.has_work:
        output = core.step()  # output.finished: request id -> its n completions

The async front (`engine.py`) calls the three parts of a step apart: `schedule` and
`postprocess` on the event loop's thread, `execute` (`device_step.py`: block copies, forward
pass, sampling) on the device thread; it adds and aborts requests only between steps.

Prompt log-probabilities need the logits of every prompt position, which a prefix-cache hit
never computes: a request that asks for them prefills its prompt without the cache (its blocks
are still cached for others), and the runner returns all of its prefill chunks' logits.

With speculative decoding on (`EngineConfig.speculative_tokens`), a step may give a sequence
several tokens; the end conditions are checked on each in order, and the tokens after the one
that ends the sequence are dropped, as if they had never been sampled.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import AutoTokenizer

from tts.engine.backend import (
    Completion,
    FinishReason,
    SamplingParams,
    check_prompt_length,
    check_token_ids,
    eos_token_ids,
)
from tts.engine.native.config import EngineConfig
from tts.engine.native.device_step import Sampled, execute
from tts.engine.native.drafter import NgramDrafter
from tts.engine.native.model_runner import ModelRunner
from tts.engine.native.scheduler import Batch, Scheduler
from tts.engine.native.sequence import Sequence
from tts.engine.native.stop import StopConditions
from tts.errors import TTSError


@dataclass
class StepOutput:
    """What one step changed: the requests whose samples got a token (once per group of
    samples), and the final completions of the requests it finished, by request id."""

    grown: list[int] = field(default_factory=list)
    finished: dict[int, list[Completion]] = field(default_factory=dict)


class EngineCore:
    """Paged KV cache, prefix cache and continuous batching over a Hugging Face model folder,
    stepped by its caller. A request is known by the seq_id of its first sample."""

    def __init__(
        self, model_dir: str | Path, device: torch.device, dtype: torch.dtype, config: EngineConfig
    ) -> None:
        self.config = config
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.runner = ModelRunner(
            Path(model_dir),
            device,
            dtype,
            config.num_blocks,
            config.block_size,
            config.kv_cache_gib,
        )
        self.max_model_len = self.runner.config.max_position_embeddings
        self.eos_token_ids = eos_token_ids(model_dir, self.tokenizer)
        self.stop_conditions = StopConditions(
            self.tokenizer, self.eos_token_ids, self.max_model_len
        )
        self.scheduler = self._new_scheduler()
        self._seq_ids = itertools.count()
        self._active: dict[int, list[Sequence]] = {}  # seq_id of each sample -> its request's

    def _new_scheduler(self) -> Scheduler:
        config = self.config
        drafter = None
        if config.speculative_tokens:
            drafter = NgramDrafter(config.speculative_tokens, self.max_model_len)
        return Scheduler(
            self.runner.num_blocks,
            config.block_size,
            config.max_num_seqs,
            config.max_num_batched_tokens,
            drafter,
            config.speculative_max_batch,
        )

    @property
    def has_work(self) -> bool:
        """Whether a request is in flight (each one's samples are queued or running)."""
        return self.scheduler.has_work

    def check(self, prompt_ids: list[int], params: SamplingParams) -> None:
        """A one-line TTSError unless the request can run: token ids the model takes, and a
        longest sequence that fits the model and the KV pool."""
        if self.runner.kv_cache is None:
            raise TTSError(
                "the engine's KV cache is released (release_memory); "
                "call reclaim_memory() before generating"
            )
        check_token_ids(prompt_ids, params, self.runner.config.vocab_size)
        check_prompt_length(len(prompt_ids), self.max_model_len)
        longest = min(len(prompt_ids) + params.max_tokens, self.max_model_len)
        blocks = -(-longest // self.config.block_size)
        if blocks > self.scheduler.cache.pool.num_blocks:
            raise TTSError(
                f"a sequence of {longest} tokens needs {blocks} KV blocks but the pool has "
                f"{self.scheduler.cache.pool.num_blocks}; raise kv_cache_gib or num_blocks"
            )

    def add(self, prompt_ids: list[int], params: SamplingParams) -> int:
        """Queue a request (checked first) for the next step; its id."""
        self.check(prompt_ids, params)
        seqs = [self._sequence(prompt_ids, params, i) for i in range(params.n)]
        self.scheduler.add(seqs)
        self._active.update((seq.seq_id, seqs) for seq in seqs)
        return seqs[0].seq_id

    def _sequence(self, prompt_ids: list[int], params: SamplingParams, index: int) -> Sequence:
        generator = None
        if params.seed is not None:
            # Sample i of a seeded request draws from seed + i, so the n samples differ.
            generator = torch.Generator(device=self.runner.device)
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

    def abort(self, request_id: int) -> None:
        """Drop a request still in flight and free its blocks at once."""
        seqs = self._active.get(request_id)
        if seqs is not None:
            self._forget(seqs)
            self.scheduler.abort([s for s in seqs if not s.is_finished])

    def abort_all(self) -> None:
        """Drop every request in flight and free their blocks. After a step that failed
        halfway through the bookkeeping, what the pool says is in use belongs to no request
        any more: then the pool (and the prefix cache) starts empty."""
        try:
            for seqs in {id(seqs): seqs for seqs in self._active.values()}.values():
                self.scheduler.abort([s for s in seqs if not s.is_finished])
            self.scheduler.pending_copies.clear()  # copy-on-write forks of dropped requests
            consistent = self.scheduler.cache.stats()["blocks_in_use"] == 0
        except Exception:
            consistent = False
        self._active.clear()
        if not consistent or self.scheduler.has_work:
            stats, self.scheduler = self.scheduler.stats, self._new_scheduler()
            self.scheduler.stats = stats

    def step(self) -> StepOutput:
        """One whole step on the calling thread; an empty output when there is no work."""
        if not self.has_work:
            return StepOutput()
        batch = self.schedule()
        return self.postprocess(batch, self.execute(batch))

    def schedule(self) -> Batch:
        """The next step's work: which tokens of which sequences it computes (`has_work`
        must hold)."""
        return self.scheduler.schedule()

    def execute(self, batch: Batch) -> Sampled:
        """The device's part of a step (`device_step.py`); it changes no sequence."""
        return execute(self.runner, batch)

    def postprocess(self, batch: Batch, sampled: Sampled) -> StepOutput:
        """Record a step's tokens, then finish the sequences that are done."""
        self.scheduler.postprocess(batch, sampled.tokens)
        for chunk, entries in zip(batch.chunks, sampled.prompt_logprobs):
            _record_prompt_logprobs(chunk.seq, chunk.start, entries)
        output = StepOutput()
        for group, group_tokens, group_logprobs in zip(
            batch.samples, sampled.tokens, sampled.logprobs
        ):
            output.grown.append(self._active[group[0].seq_id][0].seq_id)
            for seq, new, entries in zip(group, group_tokens, group_logprobs):
                first = seq.num_tokens - len(new)  # where this step's tokens start
                reason = self._finish_reason(seq, len(new))
                seq.logprobs += entries[: seq.num_tokens - first]
                if reason is not None:
                    seq.finish_reason = reason
                    if seq in self.scheduler.running:
                        self.scheduler.finish(seq)
                    else:  # a sibling that could not fork yet
                        self.scheduler.abort([seq])
                    self._complete_if_done(seq, output)
        if self.config.check_integrity:
            self.check_integrity()
        return output

    def _finish_reason(self, seq: Sequence, num_new: int) -> FinishReason | None:
        """Why `seq` ends at one of its `num_new` newest tokens, checked in the order they were
        sampled, with the tokens after that one dropped; None while it goes on."""
        new = seq.token_ids[-num_new:]
        del seq.token_ids[-num_new:]
        for token in new:
            seq.token_ids.append(token)
            reason = self.stop_conditions.finish_reason(seq)
            if reason is not None:
                return reason
        return None

    def _complete_if_done(self, seq: Sequence, output: StepOutput) -> None:
        seqs = self._active[seq.seq_id]
        if all(s.finish_reason for s in seqs):
            request_id = seqs[0].seq_id
            output.finished[request_id] = self.completions(request_id, final=True)
            self._forget(seqs)

    def _forget(self, seqs: list[Sequence]) -> None:
        for seq in seqs:
            self._active.pop(seq.seq_id, None)

    def completions(self, request_id: int, final: bool = False) -> list[Completion]:
        """The n completions of a request in flight as they stand (see `StopConditions.text`
        for what a growing one shows)."""
        seqs = self._active[request_id]
        prompt_logprobs = seqs[0].prompt_logprobs
        return [self._completion(seq, final, prompt_logprobs) for seq in seqs]

    def _completion(
        self, seq: Sequence, final: bool, prompt_logprobs: list[dict[int, float] | None] | None
    ) -> Completion:
        text, reason = self.stop_conditions.text(seq, final)
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

    def stats(self) -> dict[str, int]:
        """Counters for metrics: KV blocks and bytes, prefix hits, preemptions, queue depth,
        and speculative decoding's steps, drafted and kept tokens."""
        scheduler = self.scheduler
        return {
            **scheduler.cache.stats(),
            **asdict(scheduler.stats),
            "kv_cache_bytes": self.runner.kv_cache_bytes,
            "running": len(scheduler.running),
            "waiting": len(scheduler.waiting),
        }

    def update_weights(self, tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Take new weights by Hugging Face names and forget the prefix cache, whose KV the old
        weights computed. Only while no request is in flight (`has_work` false)."""
        self.runner.update_weights(tensors)
        self.scheduler.cache.forget_all()

    def release_memory(self) -> None:
        """Free the KV cache's memory for a trainer on the same device, forgetting the prefix
        cache (its blocks' KV goes with it). Only while no request is in flight; no request is
        taken until `reclaim_memory`."""
        if self.has_work:
            raise TTSError("the engine's memory can only be released while no request is in flight")
        self.scheduler.cache.forget_all()
        self.runner.release_kv_cache()

    def reclaim_memory(self) -> None:
        """Allocate the KV cache again (the same number of blocks) after `release_memory`."""
        self.runner.reclaim_kv_cache()

    def check_integrity(self) -> None:
        """Raise AssertionError if the KV bookkeeping is inconsistent (see PrefixCache)."""
        self.scheduler.cache.check_integrity(s.block_table for s in self.scheduler.running)


def _record_prompt_logprobs(seq: Sequence, start: int, entries: list[dict[int, float]]) -> None:
    """Keep the entries for prompt tokens not yet scored: a preempted sequence recomputes its
    prompt from the start, and the tokens it scored before must not count twice."""
    for offset, entry in enumerate(entries):
        if start + 1 + offset == len(seq.prompt_logprobs):
            seq.prompt_logprobs.append(entry)
