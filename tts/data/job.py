"""Data jobs: one function per problem, run over a problem set into one JSON Lines file.

Every `tts data` command that needs a model (reject, difficulty, shepherd, pairs) is a `Job`:
an async function that turns one problem into zero or more records, plus how to sum up what it
did. This module runs any job with a progress bar over the samples it draws (`tts.data.progress`),
concurrently (the backend batches every problem in flight), on this machine or over Ray actors
(`tts.data.ray_workers`), and makes it resumable:

- `OUT` gets each problem's records as soon as the problem is done, each line flushed;
- `OUT.progress.jsonl` (beside it) starts with the job's settings, then gets one line per
  finished problem, written after its records, with the problem's statistics.

A problem counts as done only once its progress line is written. Resuming drops from `OUT` the
records of problems that never got one (a kill between the two writes), so a run stopped at any
moment and started again with the same command ends with the same records as an uninterrupted
run, none lost, none twice. Every sampling seed derives from `--seed` and the problem id, never
from the order in which problems run, which is what makes the records the same.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tts.data.datasets import Problem, load_dataset
from tts.data.jsonl import RecordWriter, read_records
from tts.data.progress import Progress, warn_demo_model
from tts.engine import Backend, load
from tts.errors import TTSError
from tts.prompts import DEFAULT_INSTRUCTION
from tts.search import Candidate, default_prm, make_strategy, strategy_label
from tts.seeds import derive_seed
from tts.verifiers import Scorer, is_correct


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
    def uses_ray(self) -> bool:
        return self.ray or self.ray_address is not None


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


@dataclass
class Context:
    """What a job's function works with: the loaded backend and, for guided search, the PRM."""

    backend: Backend
    scorer: Scorer | None = None


@dataclass
class ProblemOutput:
    """One problem's records (in write order) and the statistics its summary adds up."""

    records: list[dict[str, Any]]
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Job:
    """A data command: its options (`config`); `process` turns one problem into records;
    `summarize` turns the stats of every problem into lines to print; `problem_of` names the
    problem a record came from.

    Functions must be module-level, so that Ray can ship a `Job` to its actors by reference.
    """

    name: str
    config: type[JobConfig]
    process: Callable[[Problem, Any, Context], Awaitable[ProblemOutput]]
    summarize: Callable[[Any, list[dict[str, Any]]], list[str]]
    problem_of: Callable[[dict[str, Any]], str]


def open_context(config: JobConfig) -> Context:
    """Load the backend (and PRM) a job runs on."""
    backend = load(
        config.model,
        config.backend,
        device=config.device,
        dtype=config.dtype,
        tokenizer=config.tokenizer,
    )
    scorer = None
    if getattr(config, "prm", None):
        from tts.verifiers import load_scorer

        scorer = load_scorer(config.prm, device=config.device, dtype=config.dtype)
    return Context(backend, scorer)


async def sample(
    problem: Problem, config: SamplingJobConfig, context: Context
) -> tuple[list[Candidate], list[bool]]:
    """The configured strategy's candidates for `problem`, seeded by the run seed and its id,
    and whether each one's final answer is right."""
    strategy = make_strategy(config.strategy, **config.strategy_options(problem.id))
    result = await strategy.solve(problem.problem, context.backend, context.scorer)
    return result.candidates, await grade([c.answer for c in result.candidates], problem.answer)


async def grade(answers: list[str | None], gold: str) -> list[bool]:
    """Is each final answer equal to the gold one (`math_equal`; None is wrong)? Graded in a
    thread: sympy can take a while, and the backend should keep getting work meanwhile."""
    return await asyncio.to_thread(lambda: [is_correct(answer, gold) for answer in answers])


def progress_path(out: Path) -> Path:
    """Where a job's progress goes: `data.jsonl` -> `data.progress.jsonl`."""
    return out.with_name(f"{out.stem}.progress.jsonl")


def resume(job: Job, config: JobConfig) -> dict[str, dict[str, Any]] | None:
    """The stats of every problem already done (by id), after checking that the output was
    written with these settings and dropping the records of problems that were not finished;
    None when nothing was done yet."""
    ledger = progress_path(config.out)
    entries = read_records(ledger)
    identity = config.identity()
    if not entries:
        if read_records(config.out):
            raise TTSError(
                f"{config.out} holds records but no {ledger.name} beside it, so they were not "
                "written by this command; use another --out or remove it"
            )
        return None
    header, *finished = entries
    if header.get("job") != job.name or header.get("settings") != identity:
        previous = header.get("settings", {})
        changed = sorted(
            k for k in identity.keys() | previous.keys() if identity.get(k) != previous.get(k)
        )
        what = f"job {header.get('job')!r}" if header.get("job") != job.name else ""
        raise TTSError(
            f"{config.out} was written with other settings ({what or ', '.join(changed)}); "
            "use another --out or the same settings"
        )
    done = {entry["problem_id"]: entry["stats"] for entry in finished}
    records = read_records(config.out)
    kept = [record for record in records if job.problem_of(record) in done]
    if len(kept) != len(records):
        temporary = config.out.with_name(config.out.name + ".tmp")
        temporary.write_bytes(b"".join(orjson.dumps(record) + b"\n" for record in kept))
        os.replace(temporary, config.out)
    return done


def run_job(job: Job, config: JobConfig) -> list[str]:
    """Run (or resume) `job` over the configured problems; return its summary lines, which
    cover every problem of this dataset and limit, those done by earlier runs included."""
    problems = load_dataset(config.dataset, config.limit)
    if len({p.id for p in problems}) != len(problems):
        raise TTSError(f"dataset {config.dataset!r} has repeated problem ids")
    done = resume(job, config)
    # The settings are pinned with the first finished problem, so a run that fails to start
    # (a mistyped model folder) leaves nothing that would refuse the corrected command.
    pin = done is None
    done = done or {}
    pending = [p for p in problems if p.id not in done]
    # Samples per problem, for the jobs that draw them (all but a custom one): the bar counts
    # samples, which move with the work, rather than problems, which end in bursts.
    budget = getattr(config, "n", 1)
    progress = Progress(
        len(problems) * budget,
        f"{job.name} to {config.out}",
        initial=(len(problems) - len(pending)) * budget,
    )
    try:
        if pending:
            warn_demo_model(config.model, config.dataset)
            config.out.parent.mkdir(parents=True, exist_ok=True)
            if pin:
                config.out.unlink(missing_ok=True)  # at most a torn line of a run that wrote none
            with (
                RecordWriter(config.out) as out,
                RecordWriter(progress_path(config.out)) as ledger,
            ):

                def commit(problem: Problem, output: ProblemOutput) -> None:
                    nonlocal pin
                    if pin:
                        ledger.write({"job": job.name, "settings": config.identity()})
                        pin = False
                    for record in output.records:
                        out.write(record)
                    ledger.write({"problem_id": problem.id, "stats": output.stats})
                    done[problem.id] = output.stats

                if config.uses_ray:
                    from tts.data.ray_workers import run_on_ray

                    def commit_counted(problem: Problem, output: ProblemOutput) -> None:
                        commit(problem, output)  # the actors' backends are out of reach
                        progress.advance(budget)

                    run_on_ray(job, config, pending, commit_counted)
                else:
                    asyncio.run(_run_here(job, config, pending, commit, progress, budget))
    finally:
        progress.close()
    return job.summarize(config, [done[p.id] for p in problems])


async def _run_here(
    job: Job,
    config: JobConfig,
    problems: list[Problem],
    commit: Callable[[Problem, ProblemOutput], None],
    progress: Progress,
    budget: int,
) -> None:
    context = open_context(config)
    gate = asyncio.Semaphore(config.concurrency)

    async def one(problem: Problem) -> None:
        async with gate:
            tracked = progress.track(context.backend, budget)
            output = await job.process(problem, config, replace(context, backend=tracked))
        commit(problem, output)
        tracked.settle()

    await asyncio.gather(*(one(problem) for problem in problems))


def count_table(title: str, counts: dict[str, int], total_label: str) -> list[str]:
    """Lines of a two-column table of counts, then their total."""
    width = max(len(label) for label in [*counts, total_label])
    lines = [title]
    lines += [f"  {label:<{width}}  {count:>8,}" for label, count in counts.items()]
    lines.append(f"  {total_label:<{width}}  {sum(counts.values()):>8,}")
    return lines
