"""The engine's figures in /metrics, read from `backend.stats()` when Prometheus scrapes."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from tts.servers.metrics import EngineCollector


def scrape(stats: dict[str, int]) -> dict[str, float]:
    registry = CollectorRegistry()
    registry.register(EngineCollector(lambda: stats))
    return {metric.name: metric.samples[0].value for metric in registry.collect()}


def test_speculative_decoding_shows_its_acceptance_and_tokens_per_step():
    figures = scrape(
        {"blocks_in_use": 3, "speculative_steps": 10, "drafted_tokens": 40, "accepted_tokens": 30}
    )
    assert figures["tts_spec_acceptance_rate"] == 0.75
    assert figures["tts_spec_tokens_per_step"] == 4.0  # its own token and 3 kept on average
    assert (figures["tts_spec_drafted_tokens"], figures["tts_spec_accepted_tokens"]) == (40, 30)
    assert figures["tts_kv_blocks_in_use"] == 3
    off = scrape({"speculative_steps": 0, "drafted_tokens": 0, "accepted_tokens": 0})
    assert "tts_spec_acceptance_rate" not in off and "tts_spec_tokens_per_step" not in off
