"""Shared fixtures: tiny random-weight models built offline as real Hugging Face folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.prm_models import (
    POLICY_PROMPT,
    build_implicit_prm,
    build_qwen_prm,
    build_shepherd_prm,
    build_token_prm,
)
from tts.models.tiny import build_tiny_model


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Llama-family folder whose tokenizer adds a BOS token."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"), family="llama")


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Qwen2-family folder: no BOS token, tied embeddings."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-qwen"), family="qwen2")


@pytest.fixture(scope="session")
def tiny_prm_token(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TRL-format token-classification PRM (Llama backbone) with a prm_config.json."""
    return build_token_prm(tmp_path_factory.mktemp("tiny-prm-token"))


@pytest.fixture(scope="session")
def tiny_prm_policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same kind of PRM reading the policy's own text: a prompt template, one tokenization."""
    folder = tmp_path_factory.mktemp("tiny-prm-policy")
    return build_token_prm(folder, prompt_template=POLICY_PROMPT)


@pytest.fixture(scope="session")
def tiny_prm_implicit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An implicit PRM: a causal LM and the reference it is read against."""
    return build_implicit_prm(tmp_path_factory.mktemp("tiny-prm-implicit"))


@pytest.fixture(scope="session")
def tiny_prm_shepherd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Math-Shepherd-style causal LM PRM, recognised by its added step tag (not its name)."""
    return build_shepherd_prm(tmp_path_factory.mktemp("tiny-prm-tag"))


@pytest.fixture(scope="session")
def tiny_prm_qwen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Qwen2.5-Math-PRM-style folder (Qwen2ForProcessRewardModel)."""
    return build_qwen_prm(tmp_path_factory.mktemp("tiny-prm-qwen"))
