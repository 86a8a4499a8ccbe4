"""Running a benchmark: every (problem, strategy, n) row solved once, appended, resumable.

Each (problem, n) row is a unit of the resumable runner (`tts.data.runner`), and goes to
`OUT/results.jsonl` as soon as it is solved, flushed, so a run can be killed at any moment and
the same command continues where it stopped (`tts.data.ledger.RowLedger`: each row marks itself
done; `OUT/run.json` pins the settings). Every row's sampling seed derives from the run seed,
the problem id and n, never from the order in which rows run, so a resumed run writes the same
rows as an uninterrupted one. One folder can hold several strategies (run the command once per
strategy): they share the model, dataset and sampling settings, which is what makes them
comparable in one table and one figure.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tts.bench.report import plot, summarize
from tts.data.datasets import load_dataset
from tts.data.grading import grade_answer
from tts.data.jsonl import read_records
from tts.data.ledger import RowLedger
from tts.data.problem import Problem
from tts.data.runner import run_units
from tts.data.units import Context, Unit, UnitOutput
from tts.engine import Backend
from tts.errors import TTSError
from tts.search import SearchResult, default_prm, make_strategy, strategy_label
from tts.search.select import vote
from tts.seeds import derive_seed
from tts.verifiers import Scorer


class BenchConfig(BaseModel):
    """One benchmark run. The settings of `identity()` must match to add to a results folder."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("builtin", description="Hugging Face model folder, or builtin")
    backend: str = Field("native", description="generation backend")
    tokenizer: str | None = Field(
        None, description="remote backend: the served model's tokenizer folder (chat template)"
    )
    dataset: str = Field("math500", description="dataset name, .jsonl path or hf:OWNER/NAME")
    strategy: str = Field("majority", description="search strategy")
    options: dict[str, Any] = Field({}, description="the strategy's own options")
    prm: str | None = Field(
        None, description="process reward model folder, or builtin (the default for search)"
    )
    ns: list[int] = Field([1, 4, 16], description="budgets: the strategy's n per problem")
    limit: int | None = Field(None, ge=1, description="first LIMIT problems only")
    max_tokens: int = Field(1024, ge=1, description="most tokens per solution")
    temperature: float = Field(0.7, ge=0, description="sampling temperature")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass")
    seed: int = Field(0, description="run seed; each row's seed derives from it")
    out: Path = Field(description="output folder (results.jsonl, summary.json, run.json)")
    concurrency: int = Field(32, ge=1, description="rows solved at once")
    device: str | None = Field(None, description="torch device; default cuda if present")
    dtype: str | None = Field(None, description="float32, bfloat16 or float16")
    engine_options: dict[str, Any] = Field(
        {}, description="backend options for tts.engine.load, e.g. speculative_tokens=4"
    )
    plot: bool = Field(False, description="draw accuracy against tokens to OUT/accuracy.png")

    @field_validator("options")
    @classmethod
    def _no_run_settings(cls, options: dict[str, Any]) -> dict[str, Any]:
        for key, where in (("n", "the budgets (--n, or @N in a compare spec)"), ("seed", "--seed")):
            if key in options:
                raise ValueError(f"{key!r} is not a strategy option here: set it with {where}")
        return options

    @model_validator(mode="after")
    def _default_prm(self) -> BenchConfig:
        self.prm = default_prm(self.strategy, self.prm)
        return self

    def identity(self) -> dict[str, Any]:
        """The settings a results folder is only valid for."""
        varying = {"strategy", "options", "prm", "ns", "limit", "concurrency", "out", "plot"}
        varying |= {"engine_options"}  # how fast the engine runs, not what it samples
        return self.model_dump(mode="json", exclude=varying)

    @property
    def label(self) -> str:
        return strategy_label(self.strategy, self.options, self.prm)

    def strategy_options(self, n: int, problem_id: str) -> dict[str, Any]:
        """The run's sampling settings, which a strategy's own options override (a compare
        row may sample greedily beside the others), and the row's n and seed."""
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            **self.options,
            "n": n,
            "seed": derive_seed(self.seed, problem_id, n),
        }


def make_record(
    config: BenchConfig, problem: Problem, n: int, result: SearchResult
) -> dict[str, Any]:
    """One results row: the answer, its correctness, every candidate (graded) and usage."""
    graded = [grade_answer(problem, c.answer) for c in result.candidates]
    clusters = vote([c.answer for c in result.candidates])
    majority = result.candidates[clusters[0][0]].answer if clusters else None
    options = config.strategy_options(n, problem.id)
    return {
        "problem_id": problem.id,
        "dataset": config.dataset,
        "strategy": config.label,
        "n": n,
        "params": options | ({"prm": config.prm} if config.prm else {}),
        "answer": result.answer,
        "gold": problem.answer,
        "correct": grade_answer(problem, result.answer),
        "pass": any(graded),
        "majority_correct": grade_answer(problem, majority),
        "candidates": [
            {
                "text": c.text,
                "answer": c.answer,
                "score": c.score,
                "tokens": c.tokens,
                "finish_reason": c.finish_reason,
                "correct": ok,
            }
            for c, ok in zip(result.candidates, graded)
        ],
        "usage": vars(result.usage),
        **({"tree": result.tree} if result.tree is not None else {}),
    }


async def solve_row(row: tuple[Problem, int], config: BenchConfig, context: Context) -> UnitOutput:
    """One row: the strategy at budget n on the problem; the row is also its own statistics."""
    problem, n = row
    strategy = make_strategy(config.strategy, **config.strategy_options(n, problem.id))
    result = await strategy.solve(problem.problem, context.backend, context.scorer)
    # Grading runs sympy; off the event loop so the backend keeps getting work.
    record = await asyncio.to_thread(make_record, config, problem, n, result)
    return UnitOutput([record], record)


def add_timing(out: Path, key: str, seconds: float, rows: int) -> None:
    """Add a run's wall seconds and rows for `key` ("LABEL n=N") to OUT/timings.json, whose
    totals over resumed runs give each (strategy, n) its wall seconds per problem."""
    path = out / "timings.json"
    timings = orjson.loads(path.read_bytes()) if path.exists() else {}
    spent = timings.setdefault(key, {"seconds": 0.0, "rows": 0})
    spent["seconds"] += seconds
    spent["rows"] += rows
    temporary = path.with_name(path.name + ".tmp")  # a kill mid-write leaves the old file
    temporary.write_bytes(orjson.dumps(timings, option=orjson.OPT_INDENT_2))
    os.replace(temporary, path)


def with_wall_seconds(rows: list[dict[str, Any]], out: Path) -> list[dict[str, Any]]:
    """Each summary row with `wall_seconds`: the wall time its (strategy, n) rows took over the
    rows run, from OUT/timings.json (None for rows written before timings were kept)."""
    path = out / "timings.json"
    timings = orjson.loads(path.read_bytes()) if path.exists() else {}
    for row in rows:
        spent = timings.get(f"{row['strategy']} n={row['n']}")
        row["wall_seconds"] = spent["seconds"] / spent["rows"] if spent and spent["rows"] else None
    return rows


def run_bench(
    config: BenchConfig, backend: Backend | None = None, scorer: Scorer | None = None
) -> list[dict[str, Any]]:
    """Run (or resume) the benchmark; write results.jsonl, timings.json and summary.json (and
    the figure); return the summary rows of every strategy in the folder, for these problems and
    budgets. A caller running several benchmarks passes the loaded `backend` (and `scorer`) to
    each, and has said what a run of the built-in model means (`warn_demo_model`).

    The rows of one budget run together, one budget after another, and each budget's wall time
    is added to OUT/timings.json as it finishes: rows of every n at once would share one wall
    time, and no row would have a throughput of its own."""
    if not config.ns or min(config.ns) < 1:
        raise TTSError(f"every n must be >= 1, got {config.ns}")
    for n in config.ns:  # bad options fail before any model loads
        make_strategy(config.strategy, **config.strategy_options(n, ""))
    problems = load_dataset(config.dataset, config.limit)
    results_path = config.out / "results.jsonl"

    def unit_of(row: dict[str, Any]) -> tuple[str, int] | None:
        return (row["problem_id"], row["n"]) if row["strategy"] == config.label else None

    ledger = RowLedger(results_path, config.out / "run.json", config.identity(), unit_of)
    units = [Unit((p.id, n), (p, n), samples=n, wave=n) for n in config.ns for p in problems]
    spent = {"seconds": 0.0, "rows": 0}

    def timed(n: int, seconds: float, rows: int) -> None:
        add_timing(config.out, f"{config.label} n={n}", seconds, rows)
        spent["seconds"] += seconds
        spent["rows"] += rows

    started = time.perf_counter()
    name = f"bench {config.label} on {config.dataset}"
    run_units(name, units, solve_row, config, ledger, backend, scorer, on_wave=timed)
    wanted = {p.id for p in problems}
    records = [r for r in read_records(results_path) if r["problem_id"] in wanted]
    rows = with_wall_seconds(summarize(records), config.out)
    summary = {
        "config": config.model_dump(mode="json"),
        "rows": rows,
        "wall_seconds": time.perf_counter() - started,
        "solve_seconds": spent["seconds"],  # wall time of the rows run, model loading left out
        "rows_run": spent["rows"],
    }
    (config.out / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    if config.plot:
        title = f"{Path(config.model).name} on {config.dataset} ({len(problems)} problems)"
        plot(rows, config.out / "accuracy.png", title)
    return rows
