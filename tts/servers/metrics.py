"""Prometheus metrics of one app, in its own registry so that several apps (tests, or a server
beside other code) never share or clash on counters.

Traffic is counted by a pure ASGI middleware, which sees every response status, errors from the
framework included, without wrapping `receive` (disconnect detection needs the raw one). Engine
figures are read from `backend.stats()` at scrape time, when the backend has it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ROUTES = {
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/models",
    "/health",
    "/metrics",
}
MODEL = "/v1/models/{id}"  # one label for every model id asked for
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class EngineCollector(Collector):
    """KV blocks, prefix-cache hit rate and speculative decoding's acceptance, read from the
    backend when Prometheus scrapes."""

    def __init__(self, stats: Callable[[], dict[str, int]]) -> None:
        self.stats = stats

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stats = self.stats()
        for key, help_text in [
            ("blocks_in_use", "KV blocks held by running requests"),
            ("blocks_total", "KV blocks in the pool"),
            ("blocks_cached", "unreferenced KV blocks kept for prefix reuse"),
            ("preemptions", "sequences preempted for lack of KV blocks, since start"),
        ]:
            if key in stats:
                yield GaugeMetricFamily(f"tts_kv_{key}", help_text, value=stats[key])
        if stats.get("prompt_tokens"):
            rate = stats.get("prefix_hit_tokens", 0) / stats["prompt_tokens"]
            yield GaugeMetricFamily(
                "tts_prefix_cache_hit_rate", "share of prompt tokens served from the cache", rate
            )
        for key, help_text in [
            ("drafted_tokens", "draft tokens verified by speculative decoding, since start"),
            ("accepted_tokens", "draft tokens kept by speculative decoding, since start"),
        ]:
            if key in stats:
                yield GaugeMetricFamily(f"tts_spec_{key}", help_text, value=stats[key])
        if stats.get("speculative_steps"):
            yield GaugeMetricFamily(
                "tts_spec_acceptance_rate",
                "share of draft tokens kept",
                stats["accepted_tokens"] / stats["drafted_tokens"],
            )
            yield GaugeMetricFamily(
                "tts_spec_tokens_per_step",
                "tokens a sequence gains per step that verifies a draft (1 + kept draft tokens)",
                1 + stats["accepted_tokens"] / stats["speculative_steps"],
            )


class Metrics:
    """The app's counters, gauges and histograms."""

    def __init__(self, backend: Any, waiting: Callable[[], int], running: Callable[[], int]):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "tts_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "tts_request_seconds",
            "time from request to the end of its response (streams included)",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter("tts_prompt_tokens", "prompt tokens processed", registry=r)
        self.completion_tokens = Counter(
            "tts_completion_tokens", "tokens generated, every search candidate included", registry=r
        )
        self.cached_tokens = Counter(
            "tts_cached_tokens", "prompt tokens served from the prefix cache", registry=r
        )
        Gauge("tts_requests_waiting", "requests queued for a slot", registry=r).set_function(
            waiting
        )
        Gauge("tts_requests_running", "requests being served", registry=r).set_function(running)
        if hasattr(backend, "stats"):
            r.register(EngineCollector(backend.stats))

    def count_tokens(self, prompt: int, completion: int, cached: int) -> None:
        self.prompt_tokens.inc(prompt)
        self.completion_tokens.inc(completion)
        self.cached_tokens.inc(cached)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts each HTTP response by route and status, and times it to its last byte."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        route = path if path in ROUTES else MODEL if path.startswith("/v1/models/") else "other"
        status = 500  # what the client sees if the app dies before answering
        started = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)
