"""Real uvicorn servers on 127.0.0.1, all on one event loop in a background thread: they share
the tiny native engine, which belongs to the loop that drives it."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
import uvicorn
from transformers import AutoTokenizer

from tts.engine import Completion, SamplingParams, load
from tts.servers import ServerConfig, create_app
from tts.verifiers import load_scorer

SLOW_SECONDS = 1.0


class ServerLoop:
    """Starts apps as uvicorn servers on free ports; `stop` shuts them all down."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.servers: list[tuple[uvicorn.Server, object]] = []

    def start(self, app) -> str:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        server = uvicorn.Server(config)
        future = asyncio.run_coroutine_threadsafe(server.serve(), self.loop)
        deadline = time.monotonic() + 10
        while not server.started:
            if future.done() or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {future.exception()}")
            time.sleep(0.01)
        self.servers.append((server, future))
        port = server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        for server, _ in self.servers:
            server.should_exit = True
        for _, future in self.servers:
            future.result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


class SlowBackend:
    """Answers every request after SLOW_SECONDS: fills the queue deterministically."""

    def __init__(self, model_dir: Path) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)

    async def generate(self, prompt, params: SamplingParams) -> list[Completion]:
        await asyncio.sleep(SLOW_SECONDS)
        return [Completion("slow", [5], "stop", prompt_tokens=3) for _ in range(params.n)]


@pytest.fixture(scope="session")
def engine(tiny_llama):
    return load(tiny_llama, backend="native", device="cpu", block_size=4, num_blocks=1024)


@pytest.fixture(scope="session")
def servers():
    loop = ServerLoop()
    yield loop
    loop.stop()


@pytest.fixture(scope="session")
def base_url(servers, engine, tiny_llama, tiny_prm_token) -> str:
    """The tiny Llama as "tiny", with the tiny token PRM and small limits."""
    scorer = load_scorer(tiny_prm_token, device="cpu")
    config = ServerConfig(
        model=str(tiny_llama),
        served_model_name="tiny",
        max_n=16,
        max_tokens_limit=4000,
        max_body_bytes=64 * 1024,
        keepalive_seconds=0.05,
    )
    return servers.start(create_app(engine, scorer, config))


@pytest.fixture(scope="session")
def keyed_url(servers, engine, tiny_llama) -> str:
    """The same engine behind an API key, without a PRM."""
    config = ServerConfig(model=str(tiny_llama), served_model_name="tiny", api_key="sesame")
    return servers.start(create_app(engine, None, config))


@pytest.fixture(scope="session")
def slow_url(servers, tiny_llama) -> str:
    """A slow fake backend, one request at a time and one waiting."""
    config = ServerConfig(model="slow", max_concurrency=1, max_queue=1)
    return servers.start(create_app(SlowBackend(tiny_llama), None, config))
