"""Running a benchmark: every (problem, strategy, n) row solved once, appended, resumable.

Each row goes to `OUT/results.jsonl` as soon as it is solved, flushed, so a run can be killed at
any moment and the same command continues where it stopped. Every row's sampling seed derives
from the run seed, the problem id and n, never from the order in which rows run, so a resumed
run writes the same rows as an uninterrupted one. One folder can hold several strategies (run
the command once per strategy): they share the model, dataset and sampling settings, which is
what makes them comparable in one table and one figure.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tts.bench.report import summarize
from tts.data.datasets import Problem, load_dataset
from tts.data.jsonl import RecordWriter, read_records
from tts.data.progress import Progress, warn_demo_model
from tts.engine import Backend, load
from tts.errors import TTSError
from tts.search import SearchResult, default_prm, make_strategy, strategy_label
from tts.search.select import vote
from tts.seeds import derive_seed
from tts.verifiers import Scorer, is_correct


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
    plot: bool = Field(False, description="draw accuracy against tokens to OUT/accuracy.png")

    @model_validator(mode="after")
    def _default_prm(self) -> BenchConfig:
        self.prm = default_prm(self.strategy, self.prm)
        return self

    def identity(self) -> dict[str, Any]:
        """The settings a results folder is only valid for."""
        varying = {"strategy", "options", "prm", "ns", "limit", "concurrency", "out", "plot"}
        return self.model_dump(mode="json", exclude=varying)

    @property
    def label(self) -> str:
        return strategy_label(self.strategy, self.options, self.prm)

    def strategy_options(self, n: int, problem_id: str) -> dict[str, Any]:
        return {
            **self.options,
            "n": n,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "seed": derive_seed(self.seed, problem_id, n),
        }


def check_identity(config: BenchConfig, has_results: bool) -> None:
    """Refuse to add to results made with other settings; record the settings otherwise."""
    run_file = config.out / "run.json"
    identity = config.identity()
    if has_results and run_file.exists():
        previous = orjson.loads(run_file.read_bytes())
        changed = sorted(
            k for k in identity.keys() | previous.keys() if identity.get(k) != previous.get(k)
        )
        if changed:
            raise TTSError(
                f"{config.out} holds a run with other settings ({', '.join(changed)}); "
                "use another --out or the same settings"
            )
    else:
        config.out.mkdir(parents=True, exist_ok=True)
        run_file.write_bytes(orjson.dumps(identity, option=orjson.OPT_INDENT_2))


def make_record(
    config: BenchConfig, problem: Problem, n: int, result: SearchResult
) -> dict[str, Any]:
    """One results row: the answer, its correctness, every candidate (graded) and usage."""
    graded = [is_correct(c.answer, problem.answer) for c in result.candidates]
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
        "correct": is_correct(result.answer, problem.answer),
        "pass": any(graded),
        "majority_correct": is_correct(majority, problem.answer),
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


async def _solve_all(
    config: BenchConfig,
    backend: Backend,
    scorer: Scorer | None,
    jobs: list[tuple[Problem, int]],
    writer: RecordWriter,
) -> float:
    """Solve every row, the rows of one budget after another, adding the wall time of each
    budget's rows to OUT/timings.json as they finish (rows of every n at once would share one
    wall time, and no row would have a throughput of its own); return the seconds it took."""
    gate = asyncio.Semaphore(config.concurrency)
    progress = Progress(sum(n for _, n in jobs), f"bench {config.label} on {config.dataset}")

    async def solve(problem: Problem, n: int) -> None:
        strategy = make_strategy(config.strategy, **config.strategy_options(n, problem.id))
        async with gate:
            tracked = progress.track(backend, n)
            result = await strategy.solve(problem.problem, tracked, scorer)
        # Grading runs sympy; off the event loop so the backend keeps getting work.
        record = await asyncio.to_thread(make_record, config, problem, n, result)
        writer.write(record)
        tracked.settle()

    total = 0.0
    try:
        for budget in sorted({n for _, n in jobs}):
            rows = [problem for problem, n in jobs if n == budget]
            started = time.perf_counter()
            await asyncio.gather(*(solve(problem, budget) for problem in rows))
            seconds = time.perf_counter() - started
            add_timing(config.out, f"{config.label} n={budget}", seconds, len(rows))
            total += seconds
    finally:
        progress.close()
    return total


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
    each, and has said what a run of the built-in model means (`warn_demo_model`)."""
    if not config.ns or min(config.ns) < 1:
        raise TTSError(f"every n must be >= 1, got {config.ns}")
    for n in config.ns:  # bad options fail before any model loads
        make_strategy(config.strategy, **config.strategy_options(n, ""))
    problems = load_dataset(config.dataset, config.limit)
    results_path = config.out / "results.jsonl"
    done = {(r["problem_id"], r["strategy"], r["n"]) for r in read_records(results_path)}
    check_identity(config, has_results=bool(done))
    jobs = [(p, n) for p in problems for n in config.ns if (p.id, config.label, n) not in done]
    started = time.perf_counter()
    solving = 0.0
    if jobs:
        if backend is None:
            warn_demo_model(config.model, config.dataset)
            backend = load(
                config.model,
                config.backend,
                device=config.device,
                dtype=config.dtype,
                tokenizer=config.tokenizer,
            )
        if scorer is None and config.prm:
            scorer = _load_scorer(config)
        with RecordWriter(results_path) as writer:
            solving = asyncio.run(_solve_all(config, backend, scorer, jobs, writer))
    wanted = {p.id for p in problems}
    records = [r for r in read_records(results_path) if r["problem_id"] in wanted]
    rows = with_wall_seconds(summarize(records), config.out)
    summary = {
        "config": config.model_dump(mode="json"),
        "rows": rows,
        "wall_seconds": time.perf_counter() - started,
        "solve_seconds": solving,  # wall time of the rows run, model loading left out
        "rows_run": len(jobs),
    }
    (config.out / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    if config.plot:
        from tts.bench.report import plot

        title = f"{Path(config.model).name} on {config.dataset} ({len(problems)} problems)"
        plot(rows, config.out / "accuracy.png", title)
    return rows


def _load_scorer(config: BenchConfig) -> Scorer:
    from tts.verifiers import load_scorer

    return load_scorer(config.prm, device=config.device, dtype=config.dtype)
