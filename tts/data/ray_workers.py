"""Running a job's units over Ray actors: one engine per actor, one writer in the driver.

`--ray` starts a local Ray for the run (and stops it after); `--ray-address ADDR` joins an
existing cluster (`auto` for the one this machine belongs to). Each actor loads the model once
and solves up to `--concurrency` units at a time on its own event loop, so its backend batches
them as a local run does. The driver hands out units from one queue (a fast actor takes more)
and commits every result itself, to the same ledger as a local run, so the output, the progress
file and resuming are exactly those of a local run (`tts.data.runner`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tts.data.units import Process, RunSettings, Unit, UnitOutput, open_context
from tts.errors import TTSError


@dataclass(frozen=True)
class RayPlacement:
    """Where a job's actors run: a cluster's `address` (None: a local Ray started for the run),
    how many, and what each reserves."""

    address: str | None
    actors: int
    actor_cpus: float
    actor_gpus: float


class ShardWorker:
    """The body of a Ray actor: a job's `process`, its config and a loaded engine."""

    def __init__(self, process: Process, config: RunSettings) -> None:
        self.process, self.config = process, config
        self.context, self.error = None, None
        try:
            self.context = open_context(config)
        except TTSError as error:  # Ray would bury it in a dead-actor message; raise it per task
            self.error = error

    async def solve(self, task: Any) -> UnitOutput:
        if self.error is not None:
            raise self.error
        return await self.process(task, self.config, self.context)


@contextmanager
def ray_actors(
    process: Process, config: RunSettings, placement: RayPlacement
) -> Iterator[list[Any]]:
    """`placement.actors` Ray actors, each with `process` and an engine opened from `config`;
    killed on exit, and the local Ray stopped if it was started here."""
    try:
        import ray
    except ImportError:
        raise TTSError("--ray needs Ray: pip install 'tts[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        _init(ray, placement)
    worker_class = ray.remote(ShardWorker).options(
        num_cpus=placement.actor_cpus,
        num_gpus=placement.actor_gpus,
        max_concurrency=config.concurrency,
    )
    actors = [worker_class.remote(process, config) for _ in range(placement.actors)]
    try:
        yield actors
    finally:
        for actor in actors:
            ray.kill(actor)
        if started_here:
            ray.shutdown()


def _init(ray: Any, placement: RayPlacement) -> None:
    if placement.address is not None:
        try:
            ray.init(address=placement.address, logging_level="warning")
        except ConnectionError as error:
            raise TTSError(
                f"cannot reach the Ray cluster at {placement.address}: {error}"
            ) from None
        return
    # A local Ray just big enough for the actors asked for (Ray's CPUs are reservations).
    ray.init(
        num_cpus=max(1, int(placement.actors * placement.actor_cpus + 0.999)),
        num_gpus=int(placement.actors * placement.actor_gpus + 0.999),
        include_dashboard=False,
        logging_level="warning",
    )


async def solve_on_ray(
    actors: list[Any],
    concurrency: int,
    units: list[Unit],
    commit: Callable[[Unit, UnitOutput], None],
) -> None:
    """Solve `units` on `actors`, up to `concurrency` at once on each, committing each result
    as it arrives."""
    import ray

    queue: asyncio.Queue[Unit] = asyncio.Queue()
    for unit in units:
        queue.put_nowait(unit)

    async def lane(actor: Any) -> None:
        while not queue.empty():
            unit = queue.get_nowait()
            try:
                output = await actor.solve.remote(unit.task)
            except ray.exceptions.RayTaskError as error:
                cause = error.cause if isinstance(error.cause, TTSError) else None
                raise cause or error from None
            except ray.exceptions.RayActorError as error:
                raise TTSError(f"a Ray actor failed: {error}") from None
            commit(unit, output)

    await asyncio.gather(*(lane(actor) for actor in actors for _ in range(concurrency)))
