"""The server's settings: one pydantic model, loadable from YAML, every field documented.

Command-line flags of `tts serve` override the YAML, which overrides these defaults; a YAML file
lists only what it changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tts.errors import TTSError, invalid_options
from tts.search import make_strategy

# Strategy options that multiply a search's work -> the server limit each is held to. Every
# integer option of every strategy is here or in NO_LIMIT (a test keeps it so).
LIMITS = {
    "n": "max_n",
    "simulations": "max_n",
    "expand_k": "max_n",
    "concurrency": "max_n",
    "beam_width": "max_n",
    "probe": "max_n",
    "max_tokens": "max_tokens_limit",
    "max_step_tokens": "max_tokens_limit",
    "max_steps": "max_steps_limit",
    "token_budget": "max_search_tokens",
}
# They change which work is done, not how much (a wave or warm-up larger than n is n;
# particle Gibbs's iterations and the particle filter's filters divide n).
NO_LIMIT = (
    "iterations",
    "filters",
    "seed",
    "virtual_loss",
    "top_k",
    "stop_token_ids",
    "window",
    "top_logprobs",
    "wave",
    "warmup",
)


class EffortPreset(BaseModel):
    """What one `reasoning_effort` level runs: a strategy and its options, checked when the
    config loads so that a bad preset stops the server from starting, not a request."""

    model_config = ConfigDict(extra="forbid")

    strategy: str = Field(description="a name from tts.search.STRATEGIES")
    options: dict[str, Any] = Field(default_factory=dict, description="the strategy's options")

    @model_validator(mode="after")
    def _valid_strategy(self) -> EffortPreset:
        if "instruction" in self.options:
            raise ValueError("a search is prompted with the messages as sent: no instruction")
        try:
            make_strategy(self.strategy, **self.options)
        except TTSError as error:
            raise ValueError(str(error)) from None
        return self


# Presets that work without a PRM; configs/server.yaml shows PRM-guided ones.
DEFAULT_EFFORT = {
    "low": EffortPreset(strategy="majority", options={"n": 4}),
    "medium": EffortPreset(strategy="majority", options={"n": 8}),
    "high": EffortPreset(strategy="majority", options={"n": 16}),
}


class ServerConfig(BaseModel):
    """Settings of `tts serve`."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("builtin", description="Hugging Face model folder to serve, or builtin")
    prm: str | None = Field(
        None, description="process reward model folder for guided search; default: builtin"
    )
    backend: str = Field("native", description="generation backend: native, hf, vllm or remote")
    tokenizer: str | None = Field(
        None, description="remote backend: the served model's tokenizer folder (chat template)"
    )
    device: str | None = Field(None, description="torch device; default cuda if present, else cpu")
    dtype: str | None = Field(None, description="float32, bfloat16 or float16; default by device")
    engine_options: dict[str, Any] = Field(
        default_factory=dict, description="passed to tts.engine.load (e.g. block_size, num_blocks)"
    )
    host: str = Field("127.0.0.1", description="address to bind; 0.0.0.0 exposes the server")
    port: int = Field(8000, ge=0, le=65535, description="TCP port; 0 picks a free one")
    api_key: str | None = Field(
        None, description="when set, /v1 and /metrics need `Authorization: Bearer KEY`"
    )
    served_model_name: str | None = Field(
        None, description="the model id clients send; default: the model folder's name"
    )
    max_concurrency: int = Field(64, ge=1, description="requests served at once")
    max_queue: int = Field(256, ge=0, description="requests waiting beyond those; more get 429")
    max_n: int = Field(
        64,
        ge=1,
        description="largest n (choices), and largest width of a search: its n, simulations, "
        "expand_k, concurrency and beam_width",
    )
    max_tokens_limit: int = Field(
        32768,
        ge=1,
        description="largest max_tokens (and a search's max_step_tokens) a request may ask",
    )
    max_steps_limit: int = Field(256, ge=1, description="largest max_steps a search may ask")
    max_search_tokens: int = Field(
        65536,
        ge=1,
        description="most tokens one search request generates in all, over every candidate; "
        "the search stops there and answers with what it has (finish_reason length)",
    )
    default_max_tokens: int = Field(1024, ge=1, description="max_tokens when a request omits it")
    max_body_bytes: int = Field(4 << 20, ge=1024, description="largest request body, in bytes")
    keepalive_seconds: float = Field(
        1.0, gt=0, description="interval of `: searching` comments while a streamed search runs"
    )
    reasoning_effort: dict[str, EffortPreset] = Field(
        default_factory=lambda: dict(DEFAULT_EFFORT),
        description="reasoning_effort level -> strategy preset (merged over the defaults)",
    )

    @model_validator(mode="after")
    def _presets_within_limits(self) -> ServerConfig:
        for level, preset in self.reasoning_effort.items():
            if beyond := self.beyond_limits(preset.options):
                raise ValueError(f"reasoning_effort.{level}: {beyond[1]}")
        return self

    def beyond_limits(self, options: dict[str, Any]) -> tuple[str, str] | None:
        """The first strategy option above the server limit it is held to (LIMITS), as the
        option's name and a message saying so; None when every option is within its limit.
        The options of a strategy that another one runs (auto's probe_options and hard_options)
        are held to the same limits."""
        for option, limit_name in LIMITS.items():
            value, limit = options.get(option), getattr(self, limit_name)
            if isinstance(value, int) and value > limit:
                message = f"{option} is {value}; this server allows at most {limit} ({limit_name})"
                return option, message
        for field in ("probe_options", "hard_options"):
            nested = options.get(field)
            if isinstance(nested, dict) and (beyond := self.beyond_limits(nested)):
                return f"{field}.{beyond[0]}", f"{field}.{beyond[1]}"
        return None

    @property
    def model_name(self) -> str:
        return self.served_model_name or Path(self.model).name


def load_config(path: str | Path | None, **overrides: Any) -> ServerConfig:
    """The config from a YAML file (or none) with `overrides` on top; None overrides are unset.

    Effort presets in the file are merged over the defaults level by level, so a file can
    change "high" alone.
    """
    values: dict[str, Any] = {}
    if path is not None:
        try:
            values = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            raise TTSError(f"cannot read server config {path}: {error}") from None
        if not isinstance(values, dict):
            raise TTSError(f"server config {path} must be a mapping")
    if isinstance(values.get("reasoning_effort"), dict):
        values["reasoning_effort"] = {**DEFAULT_EFFORT, **values["reasoning_effort"]}
    values |= {key: value for key, value in overrides.items() if value is not None}
    try:
        return ServerConfig(**values)
    except ValidationError as error:
        raise invalid_options("server config", error) from None
