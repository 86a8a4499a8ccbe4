"""STaR (`tts train star`): iterations of sample -> keep the right rationales -> fine-tune
(Zelikman et al., 2022, "STaR: Bootstrapping Reasoning With Reasoning", Algorithm 1).

Iteration k (1..`iterations`):

1. the model of iteration k - 1 (the base model for k = 1) samples rationales for the training
   problems with any strategy, and the right ones are kept; with `rationalize`, the problems it
   does not solve are posed again with the answer as a hint, the hint left out of the records
   (`tts data rationales`, `tts.data.rationales`);
2. the base model, not the previous one, is fine-tuned on that iteration's rationales (`tts
   train sft`), as STaR restarts from the base model each iteration to avoid drift;
3. the new model is scored on the held-out set (`eval_dataset`, pass@1 over `eval_samples`
   samples at the sampling settings, seeded as GRPO's evaluation, so the numbers compare).

`OUT/iteration_K/` keeps each iteration's data (`data.jsonl`, with its progress file) and model
(`sft/final`); `OUT/log.jsonl` gets one line per iteration (step 0: the base model). A stopped
run started again resumes: the data job from its progress file, the fine-tuning from its
checkpoint, and finished iterations are skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tts.data.datasets import load_dataset
from tts.data.job import run_job
from tts.data.jsonl import RecordWriter, read_records
from tts.data.problem import Problem
from tts.data.rationales import JOB, RationalesConfig
from tts.engine import SamplingParams, load
from tts.prompts import DEFAULT_INSTRUCTION
from tts.seeds import derive_seed
from tts.train.evaluate import pass_at_1
from tts.train.recipe import load_recipe, model_folder
from tts.train.sft import SFTConfig, train_sft

SET_BY_STAR = frozenset({"data", "out", "model", "init", "synth"})  # per-iteration SFT fields


class STaRConfig(BaseModel):
    """One STaR run."""

    model_config = ConfigDict(extra="forbid")

    out: Path = Field(description="output folder: iteration_K/, log.jsonl")
    model: str = Field("builtin", description="the base model folder, or builtin")
    dataset: str = Field("synth:arith:3:2000:train", description="training problems")
    limit: int | None = Field(500, ge=1, description="first LIMIT training problems")
    iterations: int = Field(3, ge=1, le=50, description="sample -> fine-tune rounds")
    rationalize: bool = Field(True, description="hint the answer for the unsolved problems")
    hint: str = Field(
        "Hint: the answer is {answer}.", description="the hint; {answer} is the gold answer"
    )
    strategy: str = Field("majority", description="search strategy that samples rationales")
    options: dict[str, Any] = Field({}, description="the strategy's own options")
    prm: str | None = Field(None, description="PRM for strategies that read one")
    n: int = Field(4, ge=1, le=1024, description="rationales sampled per problem")
    keep: int = Field(1, ge=1, description="most rationales kept per problem")
    temperature: float = Field(1.0, ge=0, description="sampling temperature")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass")
    max_tokens: int = Field(256, ge=1, description="most tokens per rationale")
    sft: dict[str, Any] = Field(
        {}, description="tts train sft settings of each iteration (max_steps, lr, ...)"
    )
    eval_dataset: str | None = Field("synth:arith:3", description="held-out pass@1 set")
    eval_limit: int = Field(100, ge=1, description="eval problems")
    eval_samples: int = Field(8, ge=1, description="samples per eval problem")
    device: str | None = Field(None, description="torch device; default cuda if present")
    seed: int = Field(0, description="sampling and training seed")

    @model_validator(mode="after")
    def _parts_build(self) -> STaRConfig:
        taken = SET_BY_STAR & self.sft.keys()
        if taken:
            raise ValueError(f"sft: {', '.join(sorted(taken))} are set by STaR each iteration")
        self.rationales_config(1, self.model)  # a bad strategy or option fails here, not later
        self.sft_config(1)
        return self

    def rationales_config(self, iteration: int, model: str) -> RationalesConfig:
        """Iteration `iteration`'s data job, sampling with `model`."""
        return RationalesConfig(
            model=model,
            dataset=self.dataset,
            limit=self.limit,
            out=self.out / f"iteration_{iteration}" / "data.jsonl",
            strategy=self.strategy,
            options=self.options,
            prm=self.prm,
            n=self.n,
            keep=self.keep,
            rationalize=self.rationalize,
            hint=self.hint,
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=self.max_tokens,
            seed=derive_seed(self.seed, "star", iteration),
            device=self.device,
        )

    def sft_config(self, iteration: int) -> SFTConfig:
        """Iteration `iteration`'s fine-tuning: the base model on that iteration's data."""
        folder = self.out / f"iteration_{iteration}"
        values = {"seed": self.seed, "device": self.device} | self.sft
        return SFTConfig(data=folder / "data.jsonl", out=folder / "sft", model=self.model, **values)


def load_config(path: str | Path, **overrides: Any) -> STaRConfig:
    """A STaRConfig from a YAML recipe, with command-line overrides on top."""
    return load_recipe(STaRConfig, path, overrides)


def evaluate(model: str | Path, config: STaRConfig) -> float:
    """pass@1 of `model` on the eval set: GRPO's evaluation (`tts.train.grpo.evaluate`) at
    these sampling settings and seed."""
    problems = load_dataset(config.eval_dataset, config.eval_limit)
    backend = load(model_folder(str(model)), "native", device=config.device)

    def params(problem: Problem) -> SamplingParams:
        return SamplingParams(
            n=config.eval_samples,
            temperature=config.temperature,
            top_p=config.top_p,
            max_tokens=config.max_tokens,
            seed=derive_seed(config.seed, "eval", problem.id),
        )

    instruction = config.options.get("instruction", DEFAULT_INSTRUCTION)
    return pass_at_1(backend, problems, instruction, params)


def train_star(config: STaRConfig) -> dict[str, Any]:
    """Run (or resume) every iteration; the last model and each iteration's pass@1."""
    config.out.mkdir(parents=True, exist_ok=True)
    path = config.out / "log.jsonl"
    logged = {record["step"]: record for record in read_records(path)}
    log = RecordWriter(path)
    if 0 not in logged and config.eval_dataset:
        logged[0] = {"step": 0, "eval_pass@1": evaluate(config.model, config)}
        log.write(logged[0])
    model = config.model
    for iteration in range(1, config.iterations + 1):
        data = config.rationales_config(iteration, str(model))
        summary = run_job(JOB, data)
        sft = config.sft_config(iteration)
        final = sft.out / "final"
        if not (final / "model.safetensors").exists():
            train_sft(sft)
        if iteration not in logged:
            records = read_records(data.out)
            entry = {
                "step": iteration,
                "examples": len(records),
                "rationalized": sum(r["meta"]["rationalized"] for r in records),
                "data": summary[0],
            }
            if config.eval_dataset:
                entry["eval_pass@1"] = evaluate(final, config)
            logged[iteration] = entry
            log.write(entry)
        model = final
    log.close()
    passes = [logged[i].get("eval_pass@1") for i in range(config.iterations + 1) if i in logged]
    return {"final": str(model), "eval_pass@1_by_iteration": passes}
