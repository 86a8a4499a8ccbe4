"""`tts compare`: several strategies over one ladder of budgets, on one dataset, in one figure.

The compute-optimal picture of test-time scaling (Snell et al., 2024, "Scaling LLM Test-Time
Compute Optimally can be More Effective than Scaling Model Parameters"; Hugging Face's
search-and-learn study): accuracy against generated tokens and against wall-clock time per
problem, one line per strategy, the best pass@n as the ceiling. Each (strategy, n) is one
`tts bench` run into the same folder with the model loaded once, so the rows are bench's,
resumable one by one, and so is its wall time (`OUT/timings.json`, model loading left out).

Strategies are written `NAME` or `NAME:KEY=VALUE,KEY=VALUE` (`beam:beam_width=4`), with
`@N,N,...` at the end for budgets of its own instead of `--n` (`majority@4,16,64`: voting
reaches the budgets a search is compared against); a budget a strategy cannot take (n=1 for
beam width 4) is skipped, and the summary says so. A strategy's own `temperature`, `top_p` or
`max_tokens` overrides the run's (`majority:temperature=0@1`: greedy decoding beside the rest).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import yaml
from pydantic import ValidationError

from tts.bench.report import TOKENS, Table, format_table, plot, summarize
from tts.bench.run import BenchConfig, run_bench, with_wall_seconds
from tts.data.datasets import load_dataset
from tts.data.jsonl import read_records
from tts.data.progress import warn_demo_model
from tts.data.units import open_context
from tts.errors import TTSError, invalid_options
from tts.search import VOTING, default_prm, make_strategy

WALL = ("wall_seconds", "wall-clock seconds per problem (log scale)")


def parse_strategy(spec: str) -> tuple[str, dict[str, Any], list[int] | None]:
    """`beam:beam_width=4,aggregation=min@4,16` -> ("beam", {"beam_width": 4, "aggregation":
    "min"}, [4, 16]); values are read as YAML, so numbers and booleans get their type and a
    bracketed value is a list or mapping (`hard_options={n: 4}`); the budgets after `@` replace
    `--n` for this strategy (None without them)."""
    spec, at, budgets = spec.partition("@")
    ns = None
    if at:
        try:
            ns = [int(n) for n in budgets.split(",")]
        except ValueError:
            ns = []
        if not ns or min(ns) < 1:
            raise TTSError(
                f"strategy {spec!r}: expected @N,N,... (positive integers), got @{budgets}"
            )
    name, _, rest = spec.partition(":")
    options = {}
    for part in filter(None, _top_level_split(rest)):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise TTSError(f"strategy {spec!r}: expected NAME:KEY=VALUE,..., got {part!r}")
        options[key.strip()] = yaml.safe_load(value)
    return name.strip(), options, ns


def _top_level_split(text: str) -> list[str]:
    """`text` split at the commas outside brackets, so a value may be a YAML list or mapping:
    `hard_options={aggregation: min, confidence_weight: 2}`."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += (char in "[{") - (char in "]}")
        if char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return [*parts, text[start:]]


def run_compare(
    base: BenchConfig, strategies: list[str], report: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Run every strategy at every budget of `base.ns` (resuming what is done); write
    OUT/compare.json, OUT/compare.md and OUT/compare.png; return what compare.json holds.
    `report` gets the table line by line as it grows: the header first, then each (strategy,
    n)'s row as soon as its run is done, so a long comparison shows its results as it goes."""
    plans, skipped = [], []
    for spec in strategies:
        name, options, ns = parse_strategy(spec)
        for n in ns or base.ns:
            # Voting reads no scores: keep the PRM out of its name.
            prm = default_prm(name, None if name in VOTING else base.prm)
            update = {"strategy": name, "options": options, "ns": [n], "prm": prm}
            try:
                config = BenchConfig.model_validate(base.model_dump() | update)
            except ValidationError as error:
                raise invalid_options(f"strategy {spec!r}", error) from None
            try:
                make_strategy(name, **config.strategy_options(n, ""))
            except TTSError as error:
                if "unknown strategy" in str(error):
                    raise
                skipped.append(f"{config.label} at n={n}: {error}")
                continue
            if all((c.label, c.ns) != (config.label, config.ns) for c in plans):
                plans.append(config)
    if not plans:
        raise TTSError("no strategy can run at any of these budgets")
    problems = load_dataset(base.dataset, base.limit)
    wanted = {p.id for p in problems}
    table = Table([config.label for config in plans])
    if report:
        for line in table.header():
            report(line)
    pending = [plan for plan in plans if not _finished(base, wanted, plan)]
    context = None
    if pending:
        # One model for every plan, and one PRM for every plan that scores: they all have the
        # same (the base's, else the built-in one).
        warn_demo_model(base.model, base.dataset)
        context = open_context(next((plan for plan in pending if plan.prm), pending[0]))
    rows = []
    for config in plans:
        if context is not None and config in pending:
            run_bench(config, context.backend, context.scorer if config.prm else None)
        rows += with_wall_seconds(summarize(_records(base, wanted, config)), base.out)
        if report:
            report(table.line(rows[-1]))
    result = {"dataset": base.dataset, "model": base.model, "problems": len(problems)}
    result |= {"rows": rows, "skipped": skipped}
    (base.out / "compare.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    (base.out / "compare.md").write_text(f"```\n{format_table(rows)}\n```\n")
    title = f"{Path(base.model).name} on {base.dataset} ({len(problems)} problems)"
    timed = all(row["wall_seconds"] for row in rows)
    plot(rows, base.out / "compare.png", title, (TOKENS, WALL) if timed else (TOKENS,))
    return result


def _records(base: BenchConfig, wanted: set[str], plan: BenchConfig) -> list[dict[str, Any]]:
    """The rows of `plan` (one strategy at one n) for the problems `wanted`."""
    return [
        r
        for r in read_records(base.out / "results.jsonl")
        if r["problem_id"] in wanted and r["strategy"] == plan.label and r["n"] == plan.ns[0]
    ]


def _finished(base: BenchConfig, wanted: set[str], plan: BenchConfig) -> bool:
    """Does the folder hold a row of `plan` for every problem `wanted`?"""
    return wanted <= {r["problem_id"] for r in _records(base, wanted, plan)}
