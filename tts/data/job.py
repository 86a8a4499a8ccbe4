"""Data jobs: one function per problem, run over a problem set into one JSON Lines file.

Every `tts data` command that needs a model (reject, difficulty, shepherd, pairs) is a `Job`:
an async function that turns one problem into zero or more records, plus how to sum up what it
did. `run_job` runs any job with the resumable runner of `tts.data.runner` (each problem a unit;
a progress bar over the samples it draws; on this machine or over Ray actors), into a
`ProgressLedger` (`tts.data.ledger`):

- `OUT` gets each problem's records as soon as the problem is done, each line flushed;
- `OUT.progress.jsonl` (beside it) starts with the job's settings, then gets one line per
  finished problem, written after its records, with the problem's statistics.

A problem counts as done only once its progress line is written, so a run stopped at any moment
and started again with the same command ends with the same records as an uninterrupted run,
none lost, none twice. Every sampling seed derives from `--seed` and the problem id, never from
the order in which problems run, which is what makes the records the same.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tts.data.datasets import load_dataset
from tts.data.grading import grade_answer
from tts.data.ledger import ProgressLedger
from tts.data.problem import Problem
from tts.data.ray_workers import RayPlacement
from tts.data.runner import run_units
from tts.data.units import Context, Unit, UnitOutput
from tts.errors import TTSError
from tts.prompts import DEFAULT_INSTRUCTION
from tts.search import Candidate, default_prm, make_strategy, strategy_label
from tts.seeds import derive_seed


class JobConfig(BaseModel):
    """What every data job takes: the model, the problems, the output, and where it runs."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("builtin", description="model folder, builtin, or a URL (remote backend)")
    backend: str = Field("native", description="generation backend: native, hf, vllm or remote")
    tokenizer: str | None = Field(
        None, description="remote backend: the served model's tokenizer folder (chat template)"
    )
    dataset: str = Field("math500", description="dataset name, .jsonl path, synth:TASK:D, hf:...")
    out: Path = Field(description="output JSON Lines file")
    limit: int | None = Field(None, ge=1, description="first LIMIT problems only")
    max_tokens: int = Field(1024, ge=1, description="most tokens per solution")
    temperature: float = Field(0.7, ge=0, description="sampling temperature")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass")
    seed: int = Field(0, description="run seed; every sample's seed derives from it")
    concurrency: int = Field(16, ge=1, description="problems in flight (per Ray actor)")
    device: str | None = Field(None, description="torch device; default cuda if present")
    dtype: str | None = Field(None, description="float32, bfloat16 or float16")
    engine_options: dict[str, Any] = Field(
        {}, description="backend options for tts.engine.load, e.g. speculative_tokens=4"
    )
    ray: bool = Field(False, description="shard problems over Ray actors on a local Ray")
    ray_address: str | None = Field(None, description="or on this Ray cluster (e.g. auto)")
    actors: int = Field(2, ge=1, description="Ray actors, each with its own engine")
    actor_cpus: float = Field(1, ge=0, description="CPUs each Ray actor reserves")
    actor_gpus: float = Field(0, ge=0, description="GPUs each Ray actor reserves")

    # Settings that change how fast a run goes, never which records it writes.
    EXECUTION: ClassVar[frozenset[str]] = frozenset(
        [
            "out",
            "limit",
            "concurrency",
            "device",
            "engine_options",
            "ray",
            "ray_address",
            "actors",
            "actor_cpus",
            "actor_gpus",
        ]
    )

    def identity(self) -> dict[str, Any]:
        """The settings an output file is only valid for."""
        # Unset, the tokenizer is left out, so outputs begun before the field existed resume.
        unset = {"tokenizer"} if self.tokenizer is None else set()
        return self.model_dump(mode="json", exclude=set(self.EXECUTION) | unset)

    @property
    def placement(self) -> RayPlacement | None:
        """The Ray actors the problems run on (`--ray`, `--ray-address`); None: this process."""
        if not self.ray and self.ray_address is None:
            return None
        return RayPlacement(self.ray_address, self.actors, self.actor_cpus, self.actor_gpus)


class SamplingJobConfig(JobConfig):
    """Jobs that sample `n` candidates per problem with a search strategy and grade them."""

    strategy: str = Field("majority", description="search strategy whose candidates are used")
    options: dict[str, Any] = Field({}, description="the strategy's own options")
    prm: str | None = Field(
        None, description="process reward model folder, or builtin (the default for search)"
    )
    n: int = Field(16, ge=1, description="candidates sampled per problem")

    @model_validator(mode="after")
    def _strategy_builds(self) -> SamplingJobConfig:
        self.prm = default_prm(self.strategy, self.prm)
        make_strategy(self.strategy, **self.strategy_options(""))  # a one-line TTSError if not
        return self

    def strategy_options(self, problem_id: str) -> dict[str, Any]:
        return {
            **self.options,
            "n": self.n,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            # As `tts bench` derives it: the same settings sample the same candidates.
            "seed": derive_seed(self.seed, problem_id, self.n),
        }

    @property
    def instruction(self) -> str:
        """What the strategy appends to each problem, and so what SFT records pose it with."""
        return self.options.get("instruction", DEFAULT_INSTRUCTION)

    @property
    def label(self) -> str:
        return strategy_label(self.strategy, self.options, self.prm)


@dataclass(frozen=True)
class Job:
    """A data command: its options (`config`); `process` turns one problem into records;
    `summarize` turns the stats of every problem into lines to print; `problem_of` names the
    problem a record came from.

    Functions must be module-level, so that Ray can ship `process` to its actors by reference.
    """

    name: str
    config: type[JobConfig]
    process: Callable[[Problem, Any, Context], Awaitable[UnitOutput]]
    summarize: Callable[[Any, list[dict[str, Any]]], list[str]]
    problem_of: Callable[[dict[str, Any]], str]


async def sample(
    problem: Problem, config: SamplingJobConfig, context: Context
) -> tuple[list[Candidate], list[bool]]:
    """The configured strategy's candidates for `problem`, seeded by the run seed and its id,
    and whether each one's final answer is right."""
    strategy = make_strategy(config.strategy, **config.strategy_options(problem.id))
    result = await strategy.solve(problem.problem, context.backend, context.scorer)
    return result.candidates, await grade([c.answer for c in result.candidates], problem)


async def grade(answers: list[str | None], problem: Problem) -> list[bool]:
    """Is each final answer right for `problem` (`grade_answer`; None is wrong)? Graded in a
    thread: sympy can take a while, and the backend should keep getting work meanwhile."""
    return await asyncio.to_thread(lambda: [grade_answer(problem, a) for a in answers])


def progress_path(out: Path) -> Path:
    """Where a job's progress goes: `data.jsonl` -> `data.progress.jsonl`."""
    return out.with_name(f"{out.stem}.progress.jsonl")


def run_job(job: Job, config: JobConfig) -> list[str]:
    """Run (or resume) `job` over the configured problems; return its summary lines, which
    cover every problem of this dataset and limit, those done by earlier runs included."""
    problems = load_dataset(config.dataset, config.limit)
    if len({p.id for p in problems}) != len(problems):
        raise TTSError(f"dataset {config.dataset!r} has repeated problem ids")
    # Samples per problem, for the jobs that draw them (all but a custom one): the bar counts
    # samples, which move with the work, rather than problems, which end in bursts.
    samples = getattr(config, "n", 1)
    units = [Unit(problem.id, problem, samples) for problem in problems]
    ledger = ProgressLedger(
        config.out, progress_path(config.out), job.name, config.identity(), job.problem_of
    )
    name = f"{job.name} to {config.out}"
    done = run_units(name, units, job.process, config, ledger, ray=config.placement)
    return job.summarize(config, [done[p.id] for p in problems])


def count_table(title: str, counts: dict[str, int], total_label: str) -> list[str]:
    """Lines of a two-column table of counts, then their total."""
    width = max(len(label) for label in [*counts, total_label])
    lines = [title]
    lines += [f"  {label:<{width}}  {count:>8,}" for label, count in counts.items()]
    lines.append(f"  {total_label:<{width}}  {sum(counts.values()):>8,}")
    return lines
