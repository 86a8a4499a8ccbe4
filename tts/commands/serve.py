"""`tts serve`: an OpenAI-compatible server where a request can ask for more thinking.

Imported only when `tts serve` is the command parsed: its config's module imports the search
strategies, to check the presets.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tts.commands.config_flags import add_config_flags, config_values, search_flags
from tts.servers.config import ServerConfig, load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Serve a model over the OpenAI API (/v1/chat/completions, /v1/completions, /v1/models, "
        "/health, /metrics). Flags override --config; engine_options and reasoning_effort are "
        "set there."
    )
    parser.add_argument(
        "--config", type=Path, metavar="FILE", help="YAML server config (see configs/server.yaml)"
    )
    add_config_flags(parser, ServerConfig, search_flags(), overriding="the --config file")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from tts.servers.serve import serve  # FastAPI and uvicorn: the server extra

    serve(load_config(args.config, **config_values(ServerConfig, args)))
