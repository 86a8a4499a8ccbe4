"""Running a data job over Ray actors: one engine per actor, one writer in the driver.

`--ray` starts a local Ray for the run (and stops it after); `--ray-address ADDR` joins an
existing cluster (`auto` for the one this machine belongs to). Each actor loads the model once
and solves up to `--concurrency` problems at a time on its own event loop, so its backend
batches them as the local run does. The driver hands out problems from one queue (a fast actor
takes more) and writes every record itself through the same commit as a local run, so the
output, the progress file and resuming are exactly those of `tts.data.job`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from tts.data.datasets import Problem
from tts.data.job import Job, JobConfig, ProblemOutput, open_context
from tts.errors import TTSError


class ShardWorker:
    """The body of a Ray actor: a job, its config and a loaded engine."""

    def __init__(self, job: Job, config: JobConfig) -> None:
        self.job, self.config = job, config
        self.context, self.error = None, None
        try:
            self.context = open_context(config)
        except TTSError as error:  # Ray would bury it in a dead-actor message; raise it per task
            self.error = error

    async def process(self, problem: Problem) -> ProblemOutput:
        if self.error is not None:
            raise self.error
        return await self.job.process(problem, self.config, self.context)


def run_on_ray(
    job: Job,
    config: JobConfig,
    problems: list[Problem],
    commit: Callable[[Problem, ProblemOutput], None],
) -> None:
    """Solve `problems` on `config.actors` Ray actors, committing each result as it arrives."""
    try:
        import ray
    except ImportError:
        raise TTSError("--ray needs Ray: pip install 'tts[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        _init(ray, config)
    worker_class = ray.remote(ShardWorker).options(
        num_cpus=config.actor_cpus,
        num_gpus=config.actor_gpus,
        max_concurrency=config.concurrency,
    )
    actors = [worker_class.remote(job, config) for _ in range(config.actors)]
    try:
        asyncio.run(_drive(ray, actors, config.concurrency, problems, commit))
    finally:
        for actor in actors:
            ray.kill(actor)
        if started_here:
            ray.shutdown()


def _init(ray: Any, config: JobConfig) -> None:
    if config.ray_address is not None:
        try:
            ray.init(address=config.ray_address, logging_level="warning")
        except ConnectionError as error:
            raise TTSError(
                f"cannot reach the Ray cluster at {config.ray_address}: {error}"
            ) from None
        return
    # A local Ray just big enough for the actors asked for (Ray's CPUs are reservations).
    ray.init(
        num_cpus=max(1, int(config.actors * config.actor_cpus + 0.999)),
        num_gpus=int(config.actors * config.actor_gpus + 0.999),
        include_dashboard=False,
        logging_level="warning",
    )


async def _drive(
    ray: Any,
    actors: list[Any],
    concurrency: int,
    problems: list[Problem],
    commit: Callable[[Problem, ProblemOutput], None],
) -> None:
    queue: asyncio.Queue[Problem] = asyncio.Queue()
    for problem in problems:
        queue.put_nowait(problem)

    async def lane(actor: Any) -> None:
        while not queue.empty():
            problem = queue.get_nowait()
            try:
                output = await actor.process.remote(problem)
            except ray.exceptions.RayTaskError as error:
                cause = error.cause if isinstance(error.cause, TTSError) else None
                raise cause or error from None
            except ray.exceptions.RayActorError as error:
                raise TTSError(f"a Ray actor failed: {error}") from None
            commit(problem, output)

    await asyncio.gather(*(lane(actor) for actor in actors for _ in range(concurrency)))
