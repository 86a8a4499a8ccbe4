"""The flags and the base run that the benchmarks built on `tts compare` share: which model,
PRM and problems, how to sample, and where the resumable run and the results go."""

from __future__ import annotations

import argparse
from pathlib import Path

from tts.bench.run import BenchConfig


def compare_parser(
    description: str, dataset: str, limit: int | None, work: str
) -> argparse.ArgumentParser:
    """A benchmark's parser with the shared flags, defaulting to its own problems and folder."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", default="builtin")
    parser.add_argument("--prm", default="builtin")
    parser.add_argument("--dataset", default=dataset)
    parser.add_argument("--limit", type=int, default=limit)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--work", type=Path, default=Path(work), help="the resumable run")
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    return parser


def base_config(args: argparse.Namespace) -> BenchConfig:
    """The compare run's settings from the shared flags."""
    return BenchConfig(
        model=args.model,
        prm=args.prm,
        dataset=args.dataset,
        limit=args.limit,
        temperature=args.temperature,
        max_tokens=args.max_tokens,
        concurrency=args.concurrency,
        out=args.work,
    )
