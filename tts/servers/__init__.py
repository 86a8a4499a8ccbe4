"""The OpenAI-compatible HTTP server: a thin layer between OpenAI requests and strategies.

`create_app(backend, scorer, config)` builds the FastAPI app; `tts serve` runs it (`serve.py`).
"""

from tts.servers.app import create_app
from tts.servers.config import ServerConfig, load_config

__all__ = ["ServerConfig", "create_app", "load_config"]
