"""The contract every generation backend keeps: what a request asks for and what comes back.

Search strategies see only this module. A backend takes one prompt and a `SamplingParams`, and
returns `n` completions; batching across concurrent requests is the backend's business, so a
strategy simply awaits `generate` from as many coroutines as it likes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from transformers import GenerationConfig

from tts.errors import TTSError

FinishReason = Literal["stop", "length", "abort"]

# Seeds are signed 64-bit integers, the range vLLM's server takes; sample i of a request draws
# from seed + i, which torch.Generator.manual_seed takes for any n (it accepts up to 2**64 - 1).
SEED_RANGE = (-(2**63), 2**63 - 1)
# Each generated token is checked against every stop string and stop token: their number is
# work that a request multiplies, so it has a limit (OpenAI takes 4 stop strings, vLLM any).
MAX_STOPS = 64


class InvalidParams(TTSError, ValueError):
    """Sampling parameters out of range: bad input (a 400 in the server), and a ValueError as
    a dataclass's own checks raise."""


@dataclass(frozen=True)
class SamplingParams:
    """How to sample one request. Field names and defaults follow vLLM and the OpenAI API.

    temperature: 0 means greedy decoding.
    top_k: -1 keeps every token; min_p: 0 disables it.
    max_tokens: the most tokens to generate per completion.
    stop: strings that end a completion; the matched string is not part of the returned text.
    stop_token_ids: token ids that end a completion (besides the model's EOS), kept in it.
    seed: makes this request's samples reproducible on its own, whatever else is in flight.
    n: completions to return for the one prompt.
    logprobs: None for no log-probabilities, k >= 0 for the sampled token's plus the k best.
    prompt_logprobs: None, or k >= 0 for each prompt token's log-probability given the tokens
        before it plus the k best there (vLLM's field; what `echo` with `logprobs` reports).
    ignore_eos: keep generating past the model's EOS until max_tokens or a stop (benchmarks
        that need fixed output lengths).
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    min_p: float = 0.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    seed: int | None = None
    n: int = 1
    logprobs: int | None = None
    ignore_eos: bool = False
    prompt_logprobs: int | None = None

    def __post_init__(self) -> None:
        # Accept any sequence of stop strings but keep the params hashable (backends group by them).
        object.__setattr__(self, "stop", tuple(self.stop))
        object.__setattr__(self, "stop_token_ids", tuple(self.stop_token_ids))
        problems = []
        if self.temperature < 0:
            problems.append(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k == 0 or self.top_k < -1:
            problems.append(f"top_k must be -1 (off) or >= 1, got {self.top_k}")
        if not 0 <= self.min_p <= 1:
            problems.append(f"min_p must be in [0, 1], got {self.min_p}")
        if self.max_tokens < 1:
            problems.append(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.n < 1:
            problems.append(f"n must be >= 1, got {self.n}")
        for name in ("logprobs", "prompt_logprobs"):
            value = getattr(self, name)
            if value is not None and value < 0:
                problems.append(f"{name} must be None or >= 0, got {value}")
        low, high = SEED_RANGE
        if self.seed is not None and not low <= self.seed <= high:
            problems.append(f"seed must be in [{low}, {high}], got {self.seed}")
        if any(not s for s in self.stop):
            problems.append("stop strings must be non-empty")
        for name in ("stop", "stop_token_ids"):
            if len(getattr(self, name)) > MAX_STOPS:
                problems.append(
                    f"{name} has {len(getattr(self, name))} entries; at most {MAX_STOPS}"
                )
        if problems:
            raise InvalidParams("; ".join(problems))


@dataclass
class Completion:
    """One generated continuation.

    token_ids holds every generated token, including those of a matched stop string, while text
    ends before the stop string (as vLLM and the OpenAI API return it). logprobs, when asked
    for, has one dict per generated token mapping token id to log-probability under the model's
    unmodified distribution: the sampled token and the `logprobs` most likely ones. stop_reason
    is the stop string or stop token id that ended it, None when it ended at EOS or at the length
    limit (as in vLLM): a step-level search tells a finished step from a finished solution by it.
    prompt_logprobs, when asked for, has one entry per prompt token: None for the first (nothing
    precedes it), then {token id: logprob} for the prompt token and the `prompt_logprobs` most
    likely ones at its position (vLLM's shape); every sample of a request carries the same list.
    """

    text: str
    token_ids: list[int]
    finish_reason: FinishReason | None  # None: a streamed completion that is still growing
    logprobs: list[dict[int, float]] | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0
    stop_reason: str | int | None = None
    prompt_logprobs: list[dict[int, float] | None] | None = None


@runtime_checkable
class Backend(Protocol):
    """A text generator that search strategies drive.

    `generate` may be awaited concurrently from many coroutines; the backend batches whatever is
    in flight. Cancelling the awaiting coroutine aborts the request. `tokenizer` is a
    transformers tokenizer: callers build prompts with its `apply_chat_template`. A backend may
    also offer `stream(prompt, params)`, an async iterator of growing snapshots of the n
    completions (see `NativeBackend.stream`); callers check for it with `hasattr`.
    """

    tokenizer: Any

    async def generate(self, prompt: str | list[int], params: SamplingParams) -> list[Completion]:
        """Return `params.n` completions of `prompt` (text, or token ids used as they are)."""
        ...


def truncate_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, str | None]:
    """Cut `text` before the earliest occurrence of any stop string; return it and the match."""
    found = [(i, s) for s in stop if (i := text.find(s)) >= 0]
    if not found:
        return text, None
    cut, matched = min(found)
    return text[:cut], matched


def eos_token_ids(model_dir: str | Path, tokenizer: Any) -> frozenset[int]:
    """The tokens that end generation: the model's generation config's EOS ids (chat models
    often list several there), else the tokenizer's EOS."""
    try:
        eos = GenerationConfig.from_pretrained(model_dir).eos_token_id
    except OSError:  # no generation_config.json
        eos = None
    if eos is None:
        eos = tokenizer.eos_token_id
    ids = eos if isinstance(eos, list) else [eos]
    return frozenset(i for i in ids if i is not None)


def check_prompt_length(num_prompt_tokens: int, max_model_len: int) -> None:
    """A one-line error for an empty prompt, or one that leaves the model no room to generate."""
    if num_prompt_tokens == 0:
        raise TTSError("the prompt is empty")
    if num_prompt_tokens >= max_model_len:
        raise TTSError(
            f"the prompt has {num_prompt_tokens} tokens; the model takes at most "
            f"{max_model_len - 1} before generating"
        )


def check_token_ids(prompt_ids: list[int], params: SamplingParams, vocab_size: int) -> None:
    """A one-line error unless every prompt token and stop token id is an int the model's
    embedding takes: [0, vocab_size). A model's vocab_size (its embedding rows) may exceed the
    tokenizer's length; an id beyond it would fail the whole batch it lands in, not just its
    own request."""
    for what, ids in (
        ("prompt token", prompt_ids),
        ("stop_token_ids entry", params.stop_token_ids),
    ):
        bad = next((i for i in ids if type(i) is not int or not 0 <= i < vocab_size), None)
        if bad is not None:
            raise TTSError(
                f"{what} {bad!r} is not a token id of this model (ints in [0, {vocab_size}))"
            )


def encode_prompt(tokenizer: Any, prompt: str | list[int]) -> list[int]:
    """Token ids for a prompt: ids pass through; text gets the tokenizer's special tokens.

    A chat template already starts with the BOS token, and encoding its output with special
    tokens would double it, which silently degrades Llama-family models; the duplicate is dropped.
    """
    if not isinstance(prompt, str):
        return list(prompt)
    ids = tokenizer(prompt).input_ids
    bos = tokenizer.bos_token_id
    if bos is not None and len(ids) >= 2 and ids[0] == bos and ids[1] == bos:
        ids = ids[1:]
    return ids
