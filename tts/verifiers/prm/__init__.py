"""Process reward models: `load_scorer` reads a folder in any of four formats (`load`); each
family is one module (`token`, `implicit`, `shepherd`, `qwen`) over one batching queue
(`batching`)."""

from tts.verifiers.prm.load import load_scorer

__all__ = ["load_scorer"]
