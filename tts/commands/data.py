"""`tts data`: training data. `synth` writes synthetic problems with worked solutions; the jobs
run a model over a problem set (rejection sampling, pass rates, process labels, pairs)."""

from __future__ import annotations

import argparse
import importlib
from functools import partial
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from tts.commands.config_flags import add_config_flags, engine_flags, make_config, search_flags
from tts.data.synthetic import Style, write_sft

# The jobs: name -> (module, whose JOB.config is the job's options; what it makes).
JOBS = {
    "reject": (
        "tts.data.reject",
        "a rejection-sampled SFT set: sample --n candidates per problem, keep the verified "
        "correct ones that pass the filters, at most --keep per problem",
    ),
    "difficulty": (
        "tts.data.difficulty",
        "each problem's pass rate over --n samples, written into a copy of the dataset",
    ),
    "shepherd": (
        "tts.data.shepherd",
        "Math-Shepherd process labels: --k completions after each step of --n solutions",
    ),
    "pairs": (
        "tts.data.pairs",
        "long-to-short preference pairs: the shortest correct candidate against a longer one",
    ),
    "rationales": (
        "tts.data.rationales",
        "STaR's data: up to --keep right rationales per problem, the unsolved ones posed again "
        "with the answer as a hint (the hint left out of the records)",
    ),
}


class SynthConfig(BaseModel):
    """`tts data synth`: what `tts.data.synthetic.write_sft` writes, which checks the values."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field("arith", description="synthetic task: arith or countdown")
    difficulty: int = Field(2, description="1 (easiest) to 5")
    n: int = Field(1000, description="problems")
    style: Style = Field(
        "short", description="trace style: short, long, search or path (search: countdown)"
    )
    error_rate: float = Field(0.3, description="long style: errors per step")
    seed: int = Field(0, description="problem seed")
    max_search_lines: int | None = Field(
        None, ge=1, description="leave out problems whose search stream is longer (countdown)"
    )
    out: Path = Field(description="SFT JSON Lines file")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    jobs = parser.add_subparsers(dest="job", required=True)
    synth = jobs.add_parser(
        "synth",
        help="synthetic verifiable problems with worked solutions, in the SFT format",
        description="Append problems 0..N-1 to --out; re-running continues where it stopped.",
    )
    add_config_flags(synth, SynthConfig)
    synth.set_defaults(run=run_synth)
    for name, (module, what) in JOBS.items():
        job = jobs.add_parser(
            name,
            help=what,
            description=f"Make {what}. Records are appended to --out as each problem finishes; "
            "re-running the same command resumes where the last run stopped.",
            add_arguments=partial(add_job_flags, module),
        )
        job.set_defaults(run=run_data_job)


def add_job_flags(module: str, parser: argparse.ArgumentParser) -> None:
    # The job's module imports the engine.
    flags = search_flags() | engine_flags()
    add_config_flags(parser, importlib.import_module(module).JOB.config, flags)


def run_synth(args: argparse.Namespace) -> None:
    config = make_config(SynthConfig, args, "data synth options")
    written = write_sft(
        config.out,
        config.task,
        config.difficulty,
        config.n,
        config.style,
        config.seed,
        config.error_rate,
        config.max_search_lines,
    )
    print(f"{written} new problems in {config.out}")


def run_data_job(args: argparse.Namespace) -> None:
    from tts.data.job import progress_path, run_job

    job = importlib.import_module(JOBS[args.job][0]).JOB
    config = make_config(job.config, args, f"data {args.job} options")
    for line in run_job(job, config):
        print(line)
    print(f"records: {config.out}  progress: {progress_path(config.out)}")
