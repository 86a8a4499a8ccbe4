"""`tts bench`: a strategy on a dataset at several budgets, as an accuracy table.

Each (problem, n) pair is one row of `OUT/results.jsonl`, appended and flushed as soon as it is
solved, so a run can be killed at any moment and the same command continues where it stopped.
Every row's sampling seed derives from the run seed, the problem id and n, never from the order
in which rows run, so a resumed run writes the same rows as an uninterrupted one.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from tts.data.datasets import Problem, load_dataset
from tts.data.jsonl import RecordWriter, read_records
from tts.engine import Backend, load
from tts.errors import TTSError
from tts.search import SearchResult, make_strategy
from tts.search.majority import vote
from tts.verifiers import math_equal


class BenchConfig(BaseModel):
    """One benchmark run. Everything but `ns`, `limit` and `concurrency` must match to resume."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="Hugging Face model folder")
    backend: str = Field("native", description="generation backend")
    dataset: str = Field("math500", description="dataset name, .jsonl path or hf:OWNER/NAME")
    strategy: str = Field("majority", description="search strategy")
    ns: list[int] = Field([1, 4, 16], description="budgets: samples (n) per problem")
    limit: int | None = Field(None, ge=1, description="first LIMIT problems only")
    max_tokens: int = Field(1024, ge=1, description="most tokens per completion")
    temperature: float = Field(0.7, ge=0, description="sampling temperature")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass")
    seed: int = Field(0, description="run seed; each row's seed derives from it")
    out: Path = Field(description="output folder (results.jsonl, summary.json, run.json)")
    concurrency: int = Field(32, ge=1, description="rows solved at once")
    device: str | None = Field(None, description="torch device; default cuda if present")
    dtype: str | None = Field(None, description="float32, bfloat16 or float16")

    def identity(self) -> dict[str, Any]:
        """The settings a results file is only valid for."""
        return self.model_dump(mode="json", exclude={"ns", "limit", "concurrency", "out"})


def row_seed(seed: int, problem_id: str, n: int) -> int:
    digest = hashlib.sha256(f"{seed}:{problem_id}:{n}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def check_identity(config: BenchConfig, has_results: bool) -> None:
    """Refuse to append to results made with other settings; record the settings otherwise."""
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
    graded = [
        c.answer is not None and math_equal(c.answer, problem.answer) for c in result.candidates
    ]
    clusters = vote([c.answer for c in result.candidates])
    majority = result.candidates[clusters[0][0]].answer if clusters else None
    return {
        "problem_id": problem.id,
        "dataset": config.dataset,
        "strategy": config.strategy,
        "n": n,
        "params": {
            "n": n,
            "temperature": config.temperature,
            "top_p": config.top_p,
            "max_tokens": config.max_tokens,
            "seed": row_seed(config.seed, problem.id, n),
        },
        "answer": result.answer,
        "gold": problem.answer,
        "correct": result.answer is not None and math_equal(result.answer, problem.answer),
        "pass": any(graded),
        "majority_correct": majority is not None and math_equal(majority, problem.answer),
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
    }


async def _solve_all(
    config: BenchConfig, backend: Backend, jobs: list[tuple[Problem, int]], writer: RecordWriter
) -> None:
    gate = asyncio.Semaphore(config.concurrency)
    bar = tqdm(total=len(jobs), desc=f"bench {config.dataset}", unit="row")

    async def solve(problem: Problem, n: int) -> None:
        strategy = make_strategy(
            config.strategy,
            n=n,
            temperature=config.temperature,
            top_p=config.top_p,
            max_tokens=config.max_tokens,
            seed=row_seed(config.seed, problem.id, n),
        )
        async with gate:
            result = await strategy.solve(problem.problem, backend)
        # Grading runs sympy; off the event loop so the backend keeps getting work.
        record = await asyncio.to_thread(make_record, config, problem, n, result)
        writer.write(record)
        bar.update()

    try:
        await asyncio.gather(*(solve(p, n) for p, n in jobs))
    finally:
        bar.close()


def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per n: problems, accuracy, pass@n, maj@n, mean completion tokens and seconds per problem."""
    by_n: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_n[record["n"]].append(record)
    rows = []
    for n in sorted(by_n):
        group = by_n[n]
        count = len(group)
        rows.append(
            {
                "n": n,
                "problems": count,
                "accuracy": sum(r["correct"] for r in group) / count,
                "pass@n": sum(r["pass"] for r in group) / count,
                "maj@n": sum(r["majority_correct"] for r in group) / count,
                "tokens": sum(r["usage"]["completion_tokens"] for r in group) / count,
                "seconds": sum(r["usage"]["seconds"] for r in group) / count,
            }
        )
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    header = (
        f"{'n':>5} {'problems':>9} {'accuracy':>9} {'pass@n':>7} {'maj@n':>7} "
        f"{'tokens':>9} {'s/problem':>10}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['n']:>5} {r['problems']:>9} {r['accuracy']:>9.3f} {r['pass@n']:>7.3f} "
            f"{r['maj@n']:>7.3f} {r['tokens']:>9.1f} {r['seconds']:>10.2f}"
        )
    return "\n".join(lines)


def run_bench(config: BenchConfig) -> list[dict[str, Any]]:
    """Run (or resume) the benchmark; write results.jsonl and summary.json; return the summary."""
    if not config.ns or min(config.ns) < 1:
        raise TTSError(f"every n must be >= 1, got {config.ns}")
    make_strategy(
        config.strategy,
        temperature=config.temperature,
        top_p=config.top_p,
        max_tokens=config.max_tokens,
    )  # bad options fail before any model loads
    problems = load_dataset(config.dataset, config.limit)
    results_path = config.out / "results.jsonl"
    done = {(r["problem_id"], r["n"]) for r in read_records(results_path)}
    check_identity(config, has_results=bool(done))
    jobs = [(p, n) for p in problems for n in config.ns if (p.id, n) not in done]
    started = time.perf_counter()
    if jobs:
        backend = load(config.model, config.backend, device=config.device, dtype=config.dtype)
        with RecordWriter(results_path) as writer:
            asyncio.run(_solve_all(config, backend, jobs, writer))
    wanted = {(p.id, n) for p in problems for n in config.ns}
    records = [r for r in read_records(results_path) if (r["problem_id"], r["n"]) in wanted]
    rows = summarize(records)
    summary = {
        "config": config.model_dump(mode="json"),
        "rows": rows,
        "wall_seconds": time.perf_counter() - started,
        "rows_run": len(jobs),
    }
    (config.out / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    return rows
