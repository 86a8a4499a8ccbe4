"""Fixtures for the native engine's tests: a Qwen3 folder beside the shared Llama and Qwen2."""

from __future__ import annotations

from pathlib import Path

import pytest

from tts.models.tiny import build_tiny_model


@pytest.fixture(scope="session")
def tiny_qwen3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Qwen3-family folder: per-head q/k norms, head_dim apart from hidden/heads, tied."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-qwen3"), family="qwen3")
