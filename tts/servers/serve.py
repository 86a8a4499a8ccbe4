"""`tts serve`: load the model (and PRM) a config names and run the app under uvicorn."""

from __future__ import annotations

import uvicorn

from tts.engine import load
from tts.servers.app import create_app
from tts.servers.config import ServerConfig
from tts.verifiers import load_scorer


def serve(config: ServerConfig) -> None:
    """Serve until interrupted. Models load before the port opens, so a client never sees a
    server that accepts requests it cannot answer yet."""
    backend = load(
        config.model,
        backend=config.backend,
        device=config.device,
        dtype=config.dtype,
        tokenizer=config.tokenizer,
        **config.engine_options,
    )
    # Guided search scores with the built-in PRM unless another one is named.
    scorer = load_scorer(config.prm or "builtin", device=config.device, dtype=config.dtype)
    app = create_app(backend, scorer, config)
    print(f"tts: serving {config.model_name!r} on http://{config.host}:{config.port}/v1")
    uvicorn.run(app, host=config.host, port=config.port, log_level="info")
