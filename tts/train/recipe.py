"""What every training recipe holds and how one is read: the settings every loop reads, a YAML
recipe with command-line overrides on top, and the model folder a recipe names.

Each loop's config holds only the fields that loop reads (`extra="forbid"`), so a recipe
setting one it would ignore is refused by name instead of silently doing nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tts.errors import TTSError, invalid_options
from tts.models.builtin import resolve_model

Config = TypeVar("Config", bound="TrainConfig")


class TrainConfig(BaseModel):
    """Settings every training loop reads. Units: steps are optimizer steps; batch_size counts
    sequences."""

    model_config = ConfigDict(extra="forbid")

    out: Path = Field(description="output folder: checkpoint/, final/, log.jsonl")
    max_steps: int = Field(1000, ge=1, description="optimizer steps")
    batch_size: int = Field(16, ge=1, description="sequences per micro-batch")
    lr: float = Field(1e-3, gt=0, description="peak learning rate")
    min_lr: float | None = Field(
        None, ge=0, description="learning rate at the end of the cosine; default lr / 10"
    )
    warmup_steps: int = Field(50, ge=0, description="linear warmup steps")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay")
    grad_clip: float = Field(1.0, gt=0, description="max gradient norm")
    device: str | None = Field(None, description="torch device; default cuda if present")
    save_every: int = Field(100, ge=1, description="steps between checkpoints")
    seed: int = Field(0, description="data order, initialisation and dropout")

    @model_validator(mode="after")
    def _lr_decays(self) -> TrainConfig:
        if self.min_lr is None:
            self.min_lr = self.lr / 10
        elif self.min_lr > self.lr:
            raise ValueError(
                f"min_lr ({self.min_lr:g}) is above lr ({self.lr:g}): the cosine would rise "
                "instead of decaying; set min_lr <= lr"
            )
        return self


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping a YAML file holds; an unreadable or malformed file is a one-line error."""
    try:
        values = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as error:
        raise TTSError(f"cannot read {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise TTSError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(values, dict):
        raise TTSError(f"{path} should hold a mapping of settings")
    return values


def load_recipe(
    config_class: type[Config],
    path: str | Path,
    overrides: dict[str, Any],
    replaced_together: tuple[str, ...] = (),
) -> Config:
    """A config from a YAML recipe with command-line overrides on top (None means not given).
    Overriding any field of `replaced_together` drops the recipe's values of all of them."""
    values = read_yaml(path)
    given = {k: v for k, v in overrides.items() if v is not None}
    if given.keys() & set(replaced_together):
        values = {k: v for k, v in values.items() if k not in replaced_together}
    try:
        return config_class(**(values | given))
    except ValidationError as error:
        raise invalid_options(f"{config_class.__name__} recipe {path}", error) from None


def model_folder(model: str) -> Path:
    """The folder a recipe's `model` names (a Hugging Face folder, or builtin), checked to hold
    a tokenizer: every loop resolves its model here, as every other command does through
    `tts.models.builtin.resolve_model`."""
    folder = resolve_model(model)
    if not (folder / "tokenizer_config.json").is_file():
        raise TTSError(f"{model} has no tokenizer (tokenizer_config.json)")
    return folder
