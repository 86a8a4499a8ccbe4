"""The one resumable job runner, behind `tts bench`, `tts compare` and every `tts data` command.

A job is a list of units of work (`tts.data.units`: a (problem, n) row of a benchmark, a problem
of a data job) and an async function that solves one. The runner asks the job's ledger
(`tts.data.ledger`) which units are done, refusing other settings, and solves the rest: at most
`concurrency` at a time, all of them in flight on one backend, which batches them; or over Ray
actors (`tts.data.ray_workers`). Each unit's records go to the ledger, appended and flushed, as
soon as the unit is done, and a progress bar (`tts.data.progress`) counts the samples the units
draw. Every sampling seed derives from the run seed and the unit, never from the order in which
units run, so a run stopped at any moment and started again with the same command ends with the
same records as an uninterrupted run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import replace
from typing import Any

from tts.data.ledger import Ledger
from tts.data.progress import Progress, warn_demo_model
from tts.data.ray_workers import RayPlacement, ray_actors, solve_on_ray
from tts.data.units import Context, Process, RunSettings, Unit, UnitOutput, open_context
from tts.engine import Backend
from tts.verifiers import Scorer

# Called after each wave with its key, its wall seconds and how many units it ran.
WaveDone = Callable[[int, float, int], None]


def run_units(
    name: str,
    units: list[Unit],
    process: Process,
    config: RunSettings,
    ledger: Ledger,
    backend: Backend | None = None,
    scorer: Scorer | None = None,
    ray: RayPlacement | None = None,
    on_wave: WaveDone | None = None,
) -> dict[Hashable, Any]:
    """Run (or resume) `units` with `process`, committing each to `ledger`; return the stats of
    every unit done, by key, those of earlier runs included. The model is opened from `config`
    unless `backend` (and `scorer`) are given by a caller that runs several jobs on it and has
    said what a run of the built-in model means (`warn_demo_model`); with `ray`, each actor
    opens its own. `name` labels the progress bar."""
    done = ledger.resume()
    pending = [unit for unit in units if unit.key not in done]
    progress = Progress(
        sum(unit.samples for unit in units),
        name,
        initial=sum(unit.samples for unit in units if unit.key in done),
    )
    waves = [
        [unit for unit in pending if unit.wave == wave]
        for wave in sorted({unit.wave for unit in pending})
    ]
    try:
        if pending:
            if backend is None:
                warn_demo_model(config.model, config.dataset)
            with ledger:

                def commit(unit: Unit, output: UnitOutput) -> None:
                    ledger.commit(unit.key, output)
                    done[unit.key] = output.stats

                if ray is None:
                    context = open_context(config, backend, scorer)
                    _run_here(waves, process, config, context, commit, progress, on_wave)
                else:
                    _run_on_ray(waves, process, config, ray, commit, progress, on_wave)
    finally:
        progress.close()
    return done


def _run_here(
    waves: list[list[Unit]],
    process: Process,
    config: RunSettings,
    context: Context,
    commit: Callable[[Unit, UnitOutput], None],
    progress: Progress,
    on_wave: WaveDone | None,
) -> None:
    async def one(unit: Unit, gate: asyncio.Semaphore) -> None:
        async with gate:
            tracked = progress.track(context.backend, unit.samples)
            output = await process(unit.task, config, replace(context, backend=tracked))
        commit(unit, output)
        tracked.settle()

    async def solve(wave: list[Unit]) -> None:
        gate = asyncio.Semaphore(config.concurrency)
        await asyncio.gather(*(one(unit, gate) for unit in wave))

    asyncio.run(_run_waves(waves, solve, on_wave))


def _run_on_ray(
    waves: list[list[Unit]],
    process: Process,
    config: RunSettings,
    ray: RayPlacement,
    commit: Callable[[Unit, UnitOutput], None],
    progress: Progress,
    on_wave: WaveDone | None,
) -> None:
    def commit_counted(unit: Unit, output: UnitOutput) -> None:
        commit(unit, output)
        progress.advance(unit.samples)  # the actors' backends are out of the bar's reach

    with ray_actors(process, config, ray) as actors:

        def solve(wave: list[Unit]) -> Awaitable[None]:
            return solve_on_ray(actors, config.concurrency, wave, commit_counted)

        asyncio.run(_run_waves(waves, solve, on_wave))


async def _run_waves(
    waves: list[list[Unit]],
    solve: Callable[[list[Unit]], Awaitable[None]],
    on_wave: WaveDone | None,
) -> None:
    for wave in waves:
        started = time.perf_counter()
        await solve(wave)
        if on_wave is not None:
            on_wave(wave[0].wave, time.perf_counter() - started, len(wave))
