"""The server's settings: one pydantic model, loadable from YAML, every field documented.

Command-line flags of `tts serve` override the YAML, which overrides these defaults; a YAML file
lists only what it changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tts.errors import TTSError, invalid_options


class EffortPreset(BaseModel):
    """What one `reasoning_effort` level runs: a strategy and its options."""

    model_config = ConfigDict(extra="forbid")

    strategy: str = Field(description="a name from tts.search.STRATEGIES")
    options: dict[str, Any] = Field(default_factory=dict, description="the strategy's options")


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
    backend: str = Field("native", description="generation backend: native, hf or vllm")
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
    max_n: int = Field(64, ge=1, description="largest n (choices, or a strategy's budget)")
    max_tokens_limit: int = Field(32768, ge=1, description="largest max_tokens a request may ask")
    default_max_tokens: int = Field(1024, ge=1, description="max_tokens when a request omits it")
    max_body_bytes: int = Field(4 << 20, ge=1024, description="largest request body, in bytes")
    keepalive_seconds: float = Field(
        1.0, gt=0, description="interval of `: searching` comments while a streamed search runs"
    )
    reasoning_effort: dict[str, EffortPreset] = Field(
        default_factory=lambda: dict(DEFAULT_EFFORT),
        description="reasoning_effort level -> strategy preset (merged over the defaults)",
    )

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
