"""Load on `tts serve`: many concurrent streaming chat clients, some of which hang up midway.

    python benchmarks/server_load.py [--clients 64] [--seconds 60] [--url http://127.0.0.1:PORT]

Without --url it builds a tiny model, starts `tts serve` on it on a free local port and stops it
afterwards. Each client sends streaming chat completions one after another until the time is up;
every DISCONNECT_EVERY-th client closes each of its streams after the first tokens, which the
server must take as a cancellation. Prints one table (requests/s, latency to the last token and
to the first, errors, KV blocks still in use afterwards, which must be 0) and writes
benchmarks/results/server_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import httpx

from tts.models.tiny import build_tiny_model

CLIENTS = 64  # concurrent streaming clients
SECONDS = 60  # how long clients keep starting requests
DISCONNECT_EVERY = 8  # 1 client in this many hangs up on each of its requests midway
DISCONNECT_AFTER = 2  # content chunks a hanging-up client reads before it closes the stream
MAX_TOKENS = 24  # max_tokens of every request
MAX_REQUESTS = 50_000  # a cap on requests in all, whatever the time
REQUEST_TIMEOUT_S = 120  # one request, start to end
DRAIN_TIMEOUT_S = 30  # how long to wait for KV blocks to return to the pool after the run
SEED = 0
OUT = Path(__file__).parent / "results" / "server_load.json"
PROBLEMS = ["What is 7 * 8?", "Solve 2x + 3 = 11.", "What is 12 + 30?", "Natalia sold 48 clips."]


@dataclass
class Tally:
    """What the clients saw. Latencies in seconds: to the last token, and to the first."""

    latencies: list[float] = field(default_factory=list)
    first_token: list[float] = field(default_factory=list)
    disconnected: int = 0
    errors: list[str] = field(default_factory=list)
    started: int = 0
    peak_blocks: float = 0.0  # most KV blocks in use at one sample during the run


async def one_request(
    http: httpx.AsyncClient, model: str, rng: random.Random, hang_up: bool, tally: Tally
) -> None:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": rng.choice(PROBLEMS)}],
        "max_tokens": MAX_TOKENS,
        "temperature": 1.0,
        "seed": rng.randrange(1 << 30),
        "stream": True,
    }
    start, first, chunks = time.perf_counter(), None, 0
    async with http.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            await response.aread()
            tally.errors.append(f"HTTP {response.status_code}: {response.text[:200]}")
            return
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[len("data: ") :])
            if "error" in chunk:
                tally.errors.append(f"error chunk: {chunk['error']}")
                return
            if any(c.get("delta", {}).get("content") for c in chunk.get("choices", [])):
                first = first or time.perf_counter()
                chunks += 1
                if hang_up and chunks >= DISCONNECT_AFTER:
                    tally.disconnected += 1
                    return  # leaving the block closes the connection mid-stream
    end = time.perf_counter()
    tally.latencies.append(end - start)
    tally.first_token.append((first or end) - start)


async def client(
    index: int, http: httpx.AsyncClient, model: str, deadline: float, tally: Tally
) -> None:
    rng = random.Random(SEED + index)
    hang_up = index % DISCONNECT_EVERY == DISCONNECT_EVERY - 1
    while time.perf_counter() < deadline and tally.started < MAX_REQUESTS:
        tally.started += 1
        try:
            await asyncio.wait_for(one_request(http, model, rng, hang_up, tally), REQUEST_TIMEOUT_S)
        except (httpx.HTTPError, TimeoutError, ValueError) as error:
            tally.errors.append(f"{type(error).__name__}: {error}")


def metric(url: str, name: str) -> float | None:
    """One unlabelled sample of the server's Prometheus /metrics."""
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.split()[-1])
    return None


def blocks_in_use_after(url: str) -> float | None:
    """KV blocks still in use once the server has settled (0 unless something leaked)."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while (blocks := metric(url, "tts_kv_blocks_in_use")) and time.monotonic() < deadline:
        time.sleep(0.2)
    return blocks


async def watch_blocks(url: str, tally: Tally) -> None:
    """Sample KV blocks in use while the clients run: shows the pool was really used."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        while True:
            for line in (await http.get("/metrics")).text.splitlines():
                if line.startswith("tts_kv_blocks_in_use "):
                    tally.peak_blocks = max(tally.peak_blocks, float(line.split()[-1]))
            await asyncio.sleep(0.25)


async def drive(url: str, clients: int, seconds: float) -> tuple[Tally, float]:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=REQUEST_TIMEOUT_S) as http:
        model = (await http.get("/v1/models")).json()["data"][0]["id"]
        tally, start = Tally(), time.perf_counter()
        deadline = start + seconds
        watcher = asyncio.create_task(watch_blocks(url, tally))
        await asyncio.gather(*(client(i, http, model, deadline, tally) for i in range(clients)))
        watcher.cancel()
        return tally, time.perf_counter() - start


def start_server(folder: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "tts.cli", "serve", "--model", str(folder / "model")]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    log = (folder / "serve.log").open("w")
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env=os.environ | {"PYTHONUNBUFFERED": "1"}
    )
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
    while True:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            sys.exit(f"tts serve did not start:\n{(folder / 'serve.log').read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)


def quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=CLIENTS)
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument("--url", help="an already running server on this machine")
    args = parser.parse_args()
    if args.url and urlparse(args.url).hostname not in ("127.0.0.1", "localhost"):
        sys.exit("--url must be a server on this machine (127.0.0.1)")
    with tempfile.TemporaryDirectory() as temp:
        process = None
        if args.url:
            url = args.url.rstrip("/").removesuffix("/v1")
        else:
            build_tiny_model(Path(temp) / "model")
            process, url = start_server(Path(temp))
        try:
            tally, elapsed = asyncio.run(drive(url, args.clients, args.seconds))
            blocks = blocks_in_use_after(url)
        finally:
            if process is not None:
                process.terminate()
                process.wait(timeout=30)
    served = len(tally.latencies)
    figures = {
        "requests": tally.started,
        "served": served,
        "disconnected": tally.disconnected,
        "errors": len(tally.errors),
        "requests_per_s": served / elapsed,
        "latency_p50_s": quantile(tally.latencies, 0.5),
        "latency_p99_s": quantile(tally.latencies, 0.99),
        "ttft_p50_s": quantile(tally.first_token, 0.5),
        "ttft_p99_s": quantile(tally.first_token, 0.99),
        "kv_blocks_peak": tally.peak_blocks,
        "kv_blocks_in_use_after": blocks,
    }
    header = f"{'clients':>7} {'seconds':>7} " + " ".join(f"{k:>14}" for k in figures)
    row = f"{args.clients:>7} {elapsed:>7.1f} " + " ".join(
        f"{v:>14.3f}" if isinstance(v, float) else f"{v!s:>14}" for v in figures.values()
    )
    print(header, row, sep="\n")
    for error in tally.errors[:5]:
        print("error:", error)
    OUT.parent.mkdir(exist_ok=True)
    config = {"clients": args.clients, "seconds": args.seconds, "url": args.url}
    config |= {"disconnect_every": DISCONNECT_EVERY, "max_tokens": MAX_TOKENS, "seed": SEED}
    result = {"config": config, "elapsed_s": elapsed, **figures}
    result |= {"first_errors": tally.errors[:5], "machine": platform.platform()}
    OUT.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
