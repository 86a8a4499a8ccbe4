"""`tts model`: model folders, such as the tiny random-weight ones tests and demos run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tts.commands.config_flags import add_config_flags, make_config


class TinyModelConfig(BaseModel):
    """`tts model tiny`: the settings of `tts.models.tiny.build_tiny_model` a user picks."""

    model_config = ConfigDict(extra="forbid")

    out: Path = Field(description="folder to write")
    family: Literal["llama", "qwen2", "qwen3"] = Field("llama", description="architecture")
    seed: int = Field(0, description="seed of the random weights")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    kinds = parser.add_subparsers(dest="kind", required=True)
    tiny = kinds.add_parser("tiny", help="a tiny random-weight model for tests and demos")
    add_config_flags(tiny, TinyModelConfig)
    tiny.set_defaults(run=run_tiny)


def run_tiny(args: argparse.Namespace) -> None:
    from tts.models.tiny import build_tiny_model  # torch and transformers

    config = make_config(TinyModelConfig, args, "model tiny options")
    print(build_tiny_model(config.out, family=config.family, seed=config.seed))
