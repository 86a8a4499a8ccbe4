"""Shared fixtures: tiny random-weight models built offline as real Hugging Face folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from tts.engine.tiny import build_tiny_model


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Llama-family folder whose tokenizer adds a BOS token."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"), family="llama")


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Qwen2-family folder: no BOS token, tied embeddings."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-qwen"), family="qwen2")
