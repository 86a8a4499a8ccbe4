"""Request bodies of the OpenAI API, as far as tts honours them.

Every field either works as OpenAI (or vLLM, for its extensions) defines it, or is refused by
name with a 400: an unknown field is refused, and so is a known feature tts does not implement
(tools, response_format, penalties...) unless its value is the no-op that clients send by
default (`tools: []`, `frequency_penalty: 0`), which is accepted as the no-op it is. Responses
are plain dicts built where they are produced (`plain.py`, `search.py`), shaped as OpenAI's.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from tts.engine.backend import MAX_STOPS
from tts.servers.errors import APIError

# What the sampler's torch.Generator takes, with room for the engine's seed + sample index.
SEED_RANGE = (-(2**63), 2**63 - 1)

# Features tts does not implement -> the values that ask for nothing (accepted, as no-ops).
NO_OPS: dict[str, tuple[Any, ...]] = {
    "frequency_penalty": (None, 0),
    "presence_penalty": (None, 0),
    "repetition_penalty": (None, 1),
    "logit_bias": (None, {}),
    "response_format": (None, {"type": "text"}),
    "tools": (None, []),
    "tool_choice": (None, "none", "auto"),
    "functions": (None, []),
    "function_call": (None, "none", "auto"),
    "parallel_tool_calls": (None, True, False),
}


def is_no_op(value: Any, no_ops: tuple[Any, ...]) -> bool:
    # bool is an int in Python: `frequency_penalty: false` is not the number 0.
    return any(value == op and isinstance(value, bool) == isinstance(op, bool) for op in no_ops)


def unsupported(field: str, value: Any) -> PydanticCustomError:
    accepted = " or ".join(json.dumps(v) for v in NO_OPS[field])
    return PydanticCustomError(
        "unsupported",
        "not supported by this server (accepted only as a no-op: {accepted}); got {value}",
        {"accepted": accepted, "value": json.dumps(value, default=str)[:80]},
    )


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(Request):
    include_usage: bool = False
    continuous_usage_stats: bool = False  # vLLM's: usage on every chunk (guidellm asks for it)


class TTSOptions(Request):
    """The `tts` object: a strategy, `return_tree`, and the strategy's own options (which the
    strategy's config checks, refusing unknown ones by name)."""

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
    stop: str | Annotated[list[str], Field(max_length=MAX_STOPS)] | None = None
    seed: int | None = Field(None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None  # accepted for compatibility; tts keeps no per-user state
    reasoning_effort: str | None = None
    # vLLM's extensions, which tts's own `remote` backend sends to pass SamplingParams exactly
    top_k: int = Field(-1, ge=-1)
    min_p: float = Field(0.0, ge=0, le=1)
    stop_token_ids: list[StrictInt] = Field(default_factory=list, max_length=MAX_STOPS)
    ignore_eos: bool = False
    return_tokens_as_token_ids: bool = False  # name logprob tokens "token_id:N", not by text
    return_token_ids: bool = False  # each choice carries its generated token ids
    tts: TTSOptions | None = None
    # Not implemented: refused unless the value asks for nothing (see NO_OPS).
    frequency_penalty: Any = None
    presence_penalty: Any = None
    repetition_penalty: Any = None
    logit_bias: Any = None

    @field_validator(*NO_OPS, mode="before", check_fields=False)
    @classmethod
    def _no_op_only(cls, value: Any, info: ValidationInfo) -> Any:
        if not is_no_op(value, NO_OPS[info.field_name]):
            raise unsupported(info.field_name, value)
        return None

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
    name: str | None = None  # passed to the chat template, which may use it

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
    response_format: Any = None
    tools: Any = None
    tool_choice: Any = None
    functions: Any = None
    function_call: Any = None
    parallel_tool_calls: Any = None

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def num_logprobs(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    @property
    def problem(self) -> str:
        """What a search's PRM judges steps against: the last user message (the model itself is
        prompted with every message, through the chat template)."""
        users = [m.text for m in self.messages if m.role == "user"]
        if not users:
            raise APIError(400, "a search strategy needs a user message to solve", "messages")
        return users[-1]


class CompletionRequest(Sampling):
    # Text or token ids, one prompt or a list of them (a batch).
    prompt: str | list[StrictInt] | list[str] | list[list[StrictInt]]  # true is not token 1
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool = False  # the prompt (and, with logprobs, its tokens' logprobs) comes first

    @field_validator("echo")
    @classmethod
    def _echo_whole(cls, echo: bool, info: ValidationInfo) -> bool:
        # The prompt's logprobs come with the finished completion (a search refuses echo, in
        # thinking.SEARCH_FIELDS).
        if echo and info.data.get("stream"):
            raise PydanticCustomError("unsupported", "echo is not supported with stream")
        return echo

    @field_validator("prompt")
    @classmethod
    def _prompts_not_empty(cls, prompt: Any) -> Any:
        batch = prompt if isinstance(prompt, list) and prompt and not is_ids(prompt) else [prompt]
        if any(len(p) == 0 for p in batch):
            raise ValueError("the prompt is empty")
        return prompt

    @property
    def prompts(self) -> list[str | list[int]]:
        """The batch: one entry per prompt."""
        return [self.prompt] if isinstance(self.prompt, str) or is_ids(self.prompt) else self.prompt

    @property
    def token_limit(self) -> int | None:
        return self.max_tokens

    @property
    def num_logprobs(self) -> int | None:
        return self.logprobs

    @property
    def problem(self) -> str:
        if len(self.prompts) != 1:
            raise APIError(400, "a search takes one prompt, not a list of them", "prompt")
        if not isinstance(self.prompts[0], str):
            raise APIError(400, "a search strategy needs a text prompt, not token ids", "prompt")
        return self.prompts[0]


def is_ids(prompt: list) -> bool:
    """Whether a non-empty list prompt is one prompt of token ids (not a list of prompts)."""
    return isinstance(prompt[0], int)


MAX_DEPTH = 64  # far beyond any real request; deeper bodies only exhaust the stack


def check_json(data: Any) -> None:
    """Refuse, naming the field, what JSON allows but no part of tts can take: nesting deeper
    than MAX_DEPTH, and strings that are not Unicode text (a lone surrogate such as "\\ud800",
    which no tokenizer encodes)."""
    stack: list[tuple[Any, tuple[str, ...]]] = [(data, ())]
    while stack:
        value, path = stack.pop()
        param = ".".join(path) or None
        if len(path) > MAX_DEPTH:
            raise APIError(400, f"the body is nested deeper than {MAX_DEPTH} levels", param)
        if isinstance(value, dict):
            if not all(map(is_text, value)):
                raise APIError(400, f"{param or 'body'}: a key is not valid Unicode text", param)
            stack.extend((item, (*path, key)) for key, item in value.items())
        elif isinstance(value, list):
            stack.extend((item, (*path, str(i))) for i, item in enumerate(value))
        elif isinstance(value, str) and not is_text(value):
            message = f"{param or 'body'}: not valid Unicode text (a lone surrogate)"
            raise APIError(400, message, param)


def is_text(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
