"""Where the models that ship inside the package live, and what a model name stands for."""

from __future__ import annotations

from pathlib import Path

from tts.errors import TTSError

PACKAGE = Path(__file__).resolve().parent.parent
# The small reasoning model, trained by `tts train sft` on the synthetic tasks (its card is
# README.md in that folder), and the process reward model trained beside it.
BUILTIN = PACKAGE / "builtin"
BUILTIN_PRM = PACKAGE / "builtin_prm"


def resolve_model(model: str | Path) -> Path:
    """The Hugging Face folder a model name stands for ("builtin": the shipped model), or a
    one-line error saying what's wrong."""
    if str(model) == "builtin":
        if not (BUILTIN / "config.json").is_file():
            raise TTSError(f"the built-in model is missing from this installation ({BUILTIN})")
        return BUILTIN
    path = Path(model).expanduser()
    if not path.is_dir():
        raise TTSError(f"model folder not found: {model}")
    if not (path / "config.json").is_file():
        raise TTSError(f"not a Hugging Face model folder (no config.json): {model}")
    return path
