"""The units of work a job is made of: what a unit is, what it works with, what it gives.

A benchmark's unit is a (problem, n) row; a data job's unit is a problem. Each is solved by an
async function `process(task, config, context)`, which must be module-level so that Ray can ship
it to its actors by reference (`tts.data.ray_workers`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol

from tts.engine import Backend, load
from tts.verifiers import Scorer, load_scorer


@dataclass(frozen=True)
class Unit:
    """One unit of a job. `key` names it in the job's ledger (a problem id; a (problem id, n)
    pair); `task` is what `process` takes; `samples` is how many candidates it draws (what the
    progress bar counts); the units of one `wave` run together, the waves one after another in
    ascending order (a benchmark's budgets, each with a wall time of its own)."""

    key: Hashable
    task: Any
    samples: int = 1
    wave: int = 0


@dataclass
class UnitOutput:
    """One unit's records (in write order) and the statistics its job's summary adds up."""

    records: list[dict[str, Any]]
    stats: dict[str, Any] = field(default_factory=dict)


class RunSettings(Protocol):
    """What the runner reads of a job's config: the model to open, the problems (for the
    demo-model warning) and how many units to solve at once."""

    model: str
    backend: str
    tokenizer: str | None
    device: str | None
    dtype: str | None
    engine_options: dict[str, Any]
    dataset: str
    concurrency: int


@dataclass
class Context:
    """What a unit is solved with: the loaded backend and, for guided search, the PRM."""

    backend: Backend
    scorer: Scorer | None = None


Process = Callable[[Any, Any, Context], Awaitable[UnitOutput]]


def open_context(
    config: RunSettings, backend: Backend | None = None, scorer: Scorer | None = None
) -> Context:
    """The backend and PRM a run of `config` works with: `backend` and `scorer` where a caller
    that runs several jobs on one model has them loaded already, the others loaded here. The PRM
    is the config's `prm` (bench and the sampling jobs have one; None runs without a scorer)."""
    if backend is None:
        backend = load(
            config.model,
            config.backend,
            device=config.device,
            dtype=config.dtype,
            tokenizer=config.tokenizer,
            **config.engine_options,
        )
    prm = getattr(config, "prm", None)  # shepherd's config has no PRM field
    if prm is None:
        return Context(backend)
    if scorer is None:
        scorer = load_scorer(prm, device=config.device, dtype=config.dtype)
    return Context(backend, scorer)
