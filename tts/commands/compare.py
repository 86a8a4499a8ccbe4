"""`tts compare`: several strategies at the same budgets, accuracy against tokens and time.

Imported only when `tts compare` is the command parsed: its config's module imports the engine.
"""

from __future__ import annotations

import argparse

from tts.bench import BenchConfig
from tts.bench.compare import run_compare
from tts.bench.report import Table
from tts.commands.bench import bench_flags
from tts.commands.config_flags import add_config_flags, make_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run each --strategy at each budget n over one dataset and draw accuracy against "
        "generated tokens and wall time for all of them in OUT/compare.png, with the table in "
        "OUT/compare.md and compare.json. Re-running with the same --out resumes."
    )
    # Each --strategy names its strategy and options; the figure is always drawn.
    spelled = bench_flags() | {"strategy": None, "options": None, "plot": None}
    add_config_flags(parser, BenchConfig, spelled)
    parser.add_argument(
        "--strategy",
        dest="strategies",
        action="append",
        required=True,
        metavar="NAME[:KEY=VALUE,...][@N,...]",
        help="a strategy, its options and its own budgets, e.g. majority@4,16,64 or "
        "beam:beam_width=4 (repeatable)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    base = make_config(BenchConfig, args, "compare options")
    # Each row as soon as its run is done: a long comparison shows results as it goes.
    result = run_compare(base, args.strategies, lambda line: print(line, flush=True))
    print(Table.NOTE)
    for line in result["skipped"]:
        print(f"skipped: {line}")
    print(f"figure: {base.out / 'compare.png'}  table: {base.out / 'compare.md'}")
