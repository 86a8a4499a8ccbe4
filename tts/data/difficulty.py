"""`tts data difficulty`: each problem's pass rate, written into a copy of the dataset.

A problem's pass rate is the share of `n` sampled candidates whose final answer is right. RL
recipes use it to order a curriculum and to drop problems that teach nothing: DAPO (Yu et al.,
2025, Sec. 3.2) and Kimi k1.5 (Kimi Team, 2025, Sec. 2.1) remove prompts that the model
always or never solves, since a group of all-equal rewards has zero advantage. The output is a
dataset in the format `tts.data.datasets` reads (`id`, `problem`, `answer`, the source's other
fields) plus `pass_rate`, `samples` and `correct`, so it can be passed straight to `--dataset`.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from tts.data.job import Job, SamplingJobConfig, count_table, sample
from tts.data.problem import Problem
from tts.data.units import Context, UnitOutput


class DifficultyConfig(SamplingJobConfig):
    min_pass_rate: float = Field(0.0, ge=0, le=1, description="drop problems solved less often")
    max_pass_rate: float = Field(1.0, ge=0, le=1, description="drop problems solved more often")

    @model_validator(mode="after")
    def _range(self) -> DifficultyConfig:
        if self.min_pass_rate > self.max_pass_rate:
            raise ValueError(
                f"min_pass_rate {self.min_pass_rate} is above max_pass_rate {self.max_pass_rate}"
            )
        return self


async def process(problem: Problem, config: DifficultyConfig, context: Context) -> UnitOutput:
    candidates, graded = await sample(problem, config, context)
    correct, samples = sum(graded), len(candidates)
    pass_rate = correct / samples if samples else 0.0
    row = {"id": problem.id, "problem": problem.problem, "answer": problem.answer}
    row |= problem.metadata | {"pass_rate": pass_rate, "samples": samples, "correct": correct}
    kept = config.min_pass_rate <= pass_rate <= config.max_pass_rate
    return UnitOutput([row] if kept else [], {"pass_rate": pass_rate, "kept": kept})


BINS = (
    ("never solved (0)", lambda p: p == 0),
    ("(0, 0.25]", lambda p: 0 < p <= 0.25),
    ("(0.25, 0.5]", lambda p: 0.25 < p <= 0.5),
    ("(0.5, 0.75]", lambda p: 0.5 < p <= 0.75),
    ("(0.75, 1)", lambda p: 0.75 < p < 1),
    ("always solved (1)", lambda p: p == 1),
)


def summarize(config: DifficultyConfig, stats: list[dict[str, Any]]) -> list[str]:
    rates = [s["pass_rate"] for s in stats]
    mean = sum(rates) / len(rates) if rates else 0.0
    written = sum(s["kept"] for s in stats)
    lines = [
        f"{len(stats)} problems, {config.n} candidates each with {config.label}; "
        f"mean pass rate {mean:.3f}",
        f"written: {written}, dropped outside [{config.min_pass_rate}, {config.max_pass_rate}]: "
        f"{len(stats) - written}",
    ]
    counts = {label: sum(map(test, rates)) for label, test in BINS}
    return lines + count_table("problems by pass rate:", counts, "problems")


def problem_of(record: dict[str, Any]) -> str:
    return record["id"]


JOB = Job("difficulty", DifficultyConfig, process, summarize, problem_of)
