"""A sequence: one sample being generated, with its tokens, KV blocks and progress."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import torch

from tts.engine.backend import FinishReason, SamplingParams


class Status(enum.Enum):
    WAITING = "waiting"  # queued for (re)admission: nothing of it is in the KV cache
    RUNNING = "running"  # holds blocks; computes prefill chunks or decodes
    PARKED = "parked"  # a sibling of n > 1 samples, waiting for its leader's prefill to fork
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    """token_ids holds the prompt then every generated token. Invariants while running:
    num_computed_tokens <= len(token_ids), and block_table covers num_computed_tokens.
    block_hashes has one hash per full block of block_table whose tokens are all computed."""

    seq_id: int
    token_ids: list[int]
    num_prompt_tokens: int
    params: SamplingParams
    generator: torch.Generator | None = None  # this sample's own random stream, when seeded
    status: Status = Status.WAITING
    block_table: list[int] = field(default_factory=list)
    block_hashes: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0
    num_cached_tokens: int = 0  # prompt tokens found in the prefix cache on first admission
    admitted: bool = False
    finish_reason: FinishReason | None = None
    logprobs: list[dict[int, float]] = field(default_factory=list)
    # None unless this sequence scores its prompt: then None for the first token and one
    # {token: logprob} per prompt token scored so far.
    prompt_logprobs: list[dict[int, float] | None] | None = None

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def output_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def needs_prompt_logits(self) -> bool:
        """Whether the logits of its prompt positions are still wanted (so it must compute
        them all, none from the prefix cache)."""
        return (
            self.prompt_logprobs is not None and len(self.prompt_logprobs) < self.num_prompt_tokens
        )

    @property
    def is_finished(self) -> bool:
        return self.status is Status.FINISHED
