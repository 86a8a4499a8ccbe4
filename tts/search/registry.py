"""The strategies by name, and building one from its options.

`auto` is not listed here: it runs the strategies listed here, so the package adds it to
`STRATEGIES` once both modules are loaded (`tts.search`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tts.errors import TTSError, invalid_options
from tts.search.adaptive_majority import AdaptiveMajority, AdaptiveMajorityConfig
from tts.search.base import Strategy, StrategyConfig
from tts.search.beam import Beam, BeamConfig
from tts.search.best_of_n import BestOfN, BestOfNConfig, WeightedBestOfNConfig
from tts.search.budget import Budgeted
from tts.search.deepconf import DeepConf, DeepConfConfig
from tts.search.dvts import DVTS, DVTSConfig
from tts.search.majority import Majority, MajorityConfig
from tts.search.mcts import MCTS, MCTSConfig
from tts.search.particle_filter import ParticleFilter, ParticleFilterConfig
from tts.search.particle_gibbs import ParticleGibbs, ParticleGibbsConfig

# name -> (strategy class, its config class)
STRATEGIES: dict[str, tuple[type, type[StrategyConfig]]] = {
    "majority": (Majority, MajorityConfig),
    "adaptive_majority": (AdaptiveMajority, AdaptiveMajorityConfig),
    "best_of_n": (BestOfN, BestOfNConfig),
    "weighted_best_of_n": (BestOfN, WeightedBestOfNConfig),
    "beam": (Beam, BeamConfig),
    "dvts": (DVTS, DVTSConfig),
    "mcts": (MCTS, MCTSConfig),
    "particle_filter": (ParticleFilter, ParticleFilterConfig),
    "particle_gibbs": (ParticleGibbs, ParticleGibbsConfig),
    "deepconf": (DeepConf, DeepConfConfig),
}


# Strategies that read no scores.
VOTING = ("majority", "adaptive_majority", "deepconf")


def default_prm(strategy: str, prm: str | None) -> str | None:
    """The PRM a strategy runs with: the one given; else the built-in one (`tts/builtin_prm`)
    for every strategy that reads scores, and none for those that vote."""
    if prm is not None or strategy in VOTING:
        return prm
    return "builtin"


def make_strategy(name: str, **options: Any) -> Strategy:
    """Build the named strategy from its options, or say in one line what is wrong with them."""
    if name not in STRATEGIES:
        raise TTSError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")
    strategy_class, config_class = STRATEGIES[name]
    try:
        config = config_class(**options)
    except ValidationError as error:
        raise invalid_options(f"options for strategy {name!r}", error) from None
    strategy = strategy_class(config)
    return Budgeted(strategy, config.token_budget) if config.token_budget else strategy


def strategy_label(name: str, options: dict[str, Any], prm: str | None = None) -> str:
    """A strategy as results and data records name it: its name, then its options and the
    name of its PRM folder, e.g. `beam[beam_width=4,prm=Qwen2.5-Math-PRM-7B]`."""
    parts = [f"{k}={v}" for k, v in sorted(options.items())]
    if prm:
        parts.append(f"prm={Path(prm).name}")
    return f"{name}[{','.join(parts)}]" if parts else name
