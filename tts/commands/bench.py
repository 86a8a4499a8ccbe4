"""`tts bench`: one strategy over a dataset at several budgets, as an accuracy table.

Imported only when `tts bench` (or `tts compare`) is the command parsed: its config's module
imports the engine.
"""

from __future__ import annotations

import argparse

from tts.bench import BenchConfig, format_table, run_bench
from tts.commands.config_flags import (
    Flag,
    add_config_flags,
    engine_flags,
    make_config,
    search_flags,
)


def budgets(text: str) -> list[int]:
    """Parse `--n 1,4,16`: the budgets in increasing order, each once."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"every n must be >= 1, got {text!r}")
    return sorted(set(values))


def bench_flags() -> dict[str, Flag | None]:
    """The fields of BenchConfig spelled otherwise than generated (`tts compare` shares them)."""
    return search_flags() | engine_flags() | {"ns": Flag("--n", type=budgets, metavar="N,N,...")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run a strategy over a dataset at each budget n and print an accuracy table. "
        "Re-running with the same --out resumes where the last run stopped."
    )
    add_config_flags(parser, BenchConfig, bench_flags())
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    config = make_config(BenchConfig, args, "bench options")
    print(format_table(run_bench(config)))
    print(f"results: {config.out / 'results.jsonl'}  summary: {config.out / 'summary.json'}")
    if config.plot:
        print(f"figure: {config.out / 'accuracy.png'}")
