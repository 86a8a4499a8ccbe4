"""Search strategies: each one short module over the `Backend` and `Scorer` interfaces."""

from __future__ import annotations

from tts.search.auto import Auto, AutoConfig
from tts.search.base import Candidate, SearchResult, Strategy, StrategyConfig, Usage
from tts.search.registry import STRATEGIES, VOTING, default_prm, make_strategy, strategy_label

STRATEGIES["auto"] = (Auto, AutoConfig)

__all__ = [
    "STRATEGIES",
    "VOTING",
    "Candidate",
    "SearchResult",
    "Strategy",
    "StrategyConfig",
    "Usage",
    "default_prm",
    "make_strategy",
    "strategy_label",
]
