"""Request bodies of the OpenAI API, as far as tts honours them.

Unknown fields are ignored, as OpenAI's API ignores them, so clients that send newer or
vendor-specific fields keep working; a known field with a wrong type or value is a 400. Responses
are plain dicts built where they are produced (`sampling.py`, `thinking.py`), shaped as OpenAI's.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tts.servers.errors import APIError


class Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class StreamOptions(Request):
    include_usage: bool = False


class TTSOptions(Request):
    """The `tts` object: a strategy, `return_tree`, and the strategy's own options."""

    model_config = ConfigDict(extra="allow")  # every other key is a strategy option

    strategy: str | None = Field(None, description="default: the effort preset's, else majority")
    return_tree: bool = False

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Sampling(Request):
    """Fields both endpoints share."""

    model: str | None = None  # optional, as in vLLM; when given it must be the served model
    n: int = Field(1, ge=1)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None  # accepted for compatibility; tts keeps no per-user state
    reasoning_effort: str | None = None
    # vLLM's extensions, which tts's own `remote` backend sends to pass SamplingParams exactly
    top_k: int = Field(-1, ge=-1)
    min_p: float = Field(0.0, ge=0, le=1)
    stop_token_ids: list[int] = Field(default_factory=list)
    ignore_eos: bool = False
    return_tokens_as_token_ids: bool = False  # name logprob tokens "token_id:N", not by text
    tts: TTSOptions | None = None

    @model_validator(mode="after")
    def _stops_not_empty(self) -> Sampling:
        if self.stop is not None and any(not s for s in self.stops):
            raise ValueError("stop strings must be non-empty")
        return self

    @property
    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class TextPart(Request):
    type: Literal["text"]
    text: str


class Message(Request):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)  # OpenAI's newer name for max_tokens
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def num_logprobs(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    @property
    def problem(self) -> str:
        """What a search strategy solves: the last user message (strategies pose it with their
        own instruction and template, so system messages and earlier turns do not reach them)."""
        users = [m.text for m in self.messages if m.role == "user"]
        if not users:
            raise APIError(400, "a search strategy needs a user message to solve", "messages")
        return users[-1]


class CompletionRequest(Sampling):
    # One prompt per request, text or token ids; a batch of one is unwrapped.
    prompt: str | list[int] | list[str] | list[list[int]]
    logprobs: int | None = Field(None, ge=0, le=20)

    @model_validator(mode="after")
    def _one_prompt(self) -> CompletionRequest:
        prompt = self.prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], str | list):
            if len(prompt) != 1:
                raise ValueError("tts takes one prompt per request; send a batch as requests")
            self.prompt = prompt[0]
        if not self.prompt:
            raise ValueError("the prompt is empty")
        return self

    @property
    def token_limit(self) -> int | None:
        return self.max_tokens

    @property
    def num_logprobs(self) -> int | None:
        return self.logprobs

    @property
    def problem(self) -> str:
        if not isinstance(self.prompt, str):
            raise APIError(400, "a search strategy needs a text prompt, not token ids", "prompt")
        return self.prompt
