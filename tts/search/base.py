"""What every search strategy takes and returns.

A strategy solves one problem with plain async code over a `Backend` (and, for guided search, a
`Scorer`); throughput comes from solving many problems concurrently while the backend batches
their requests. Every strategy returns the same `SearchResult`, so benchmarks, the server and data
generation treat them alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tts.engine import Backend, Completion, SamplingParams
from tts.engine.backend import MAX_STOPS
from tts.prompts import DEFAULT_INSTRUCTION, build_prompt
from tts.verifiers import Scorer


class StrategyConfig(BaseModel):
    """Options every strategy shares: how to prompt and how to sample."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    temperature: float = Field(0.7, ge=0, description="sampling temperature; 0 is greedy")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass")
    max_tokens: int = Field(1024, ge=1, description="most tokens generated per completion")
    top_k: int = Field(-1, ge=-1, description="most likely tokens kept; -1 keeps all")
    min_p: float = Field(0.0, ge=0, le=1, description="drop tokens below min_p x the top one's")
    seed: int | None = Field(None, description="seed for reproducible samples; None draws afresh")
    token_budget: int | None = Field(
        None,
        ge=1,
        description="most tokens one solve spends, generated plus scorer tokens; None: no cap",
    )
    stop: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list,
        max_length=MAX_STOPS - 1,  # a step-level search adds its step delimiter
        description="strings that end a solution, as they end a plain sample (not kept in it)",
    )
    stop_token_ids: list[int] = Field(
        default_factory=list,
        max_length=MAX_STOPS,
        description="token ids that end a solution (kept in it)",
    )
    instruction: str = Field(DEFAULT_INSTRUCTION, description="appended to the problem")

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop(cls, stop: Any) -> Any:
        return [stop] if isinstance(stop, str) else stop  # OpenAI's `stop` takes either form

    @field_validator("top_k")
    @classmethod
    def _top_k_on_or_off(cls, top_k: int) -> int:
        if top_k == 0:
            raise ValueError("top_k must be -1 (off) or >= 1")
        return top_k

    def sampling_params(self, n: int = 1, **overrides: Any) -> SamplingParams:
        """The backend parameters for `n` samples under this config."""
        values = dict(
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            min_p=self.min_p,
            max_tokens=self.max_tokens,
            stop=self.stop,
            stop_token_ids=self.stop_token_ids,
            seed=self.seed,
            n=n,
        )
        return SamplingParams(**(values | overrides))


@dataclass
class Usage:
    """Compute a search spent: tokens in, out and served from the prefix cache, scorer work, time.

    prompt_tokens counts every prompt token sent to the backend, cached ones included.
    seconds is wall-clock time from the start of `solve` to its end.
    token_budget: the strategy's `token_budget` (None: no cap), and budget_exhausted whether
    the search reached it (its last samples cut short or never drawn).
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    scorer_calls: int = 0
    scorer_tokens: int = 0
    seconds: float = 0.0
    token_budget: int | None = None
    budget_exhausted: bool = False

    def add(self, completions: list[Completion]) -> None:
        """Count one `generate` call's completions (n samples each carry the prompt once)."""
        for completion in completions:
            self.prompt_tokens += completion.prompt_tokens
            self.cached_tokens += completion.cached_tokens
            self.completion_tokens += len(completion.token_ids)

    def include(self, other: Usage) -> None:
        """Count what another search spent (a strategy that runs others, as `auto` does)."""
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cached_tokens += other.cached_tokens
        self.scorer_calls += other.scorer_calls
        self.scorer_tokens += other.scorer_tokens
        self.budget_exhausted |= other.budget_exhausted


@dataclass
class Candidate:
    """One finished solution a strategy considered.

    score: the strategy's own measure of it: vote share, reward-model score, ...
    """

    text: str
    answer: str | None
    score: float | None = None
    tokens: int = 0
    finish_reason: str = "stop"


@dataclass
class SearchResult:
    """The chosen answer and text, every candidate, the search tree (tree strategies) and usage."""

    answer: str | None
    text: str
    candidates: list[Candidate]
    tree: dict[str, Any] | None = None
    usage: Usage = field(default_factory=Usage)


@runtime_checkable
class Strategy(Protocol):
    """Solves one problem. Implementations take their options as a pydantic config.

    The scorer judges steps against `problem`. The model is prompted with `prompt` when it is
    given, exactly as the caller rendered it (the server passes the client's conversation through
    the chat template); without it, with `problem` posed by `build_prompt` (the strategy's
    instruction and the model's chat template), as benchmarks and data generation pose it.
    """

    async def solve(
        self,
        problem: str,
        backend: Backend,
        scorer: Scorer | None = None,
        prompt: str | None = None,
    ) -> SearchResult: ...


def pose(tokenizer: Any, problem: str, instruction: str, prompt: str | None) -> str:
    """What a strategy prompts with: the caller's own `prompt` when there is one, else
    `problem` with `instruction` through `build_prompt` (see `Strategy`)."""
    return prompt if prompt is not None else build_prompt(tokenizer, problem, instruction)


def log_likelihood(completion: Completion) -> float:
    """log pi of the sampled tokens, from the logprobs the backend returned (0 without them)."""
    return sum(
        entry[token] for entry, token in zip(completion.logprobs or [], completion.token_ids)
    )
