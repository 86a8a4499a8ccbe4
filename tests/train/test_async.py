"""Asynchronous GRPO: batches sampled ahead of the trainer by older policy versions, tagged
token by token with the version that sampled them, partial rollouts continued by newer weights,
and rollout workers on a real local Ray.

The pipeline tests drive `RolloutPipeline` with the native engine in this process standing in
for a worker (the pipeline only sees a Backend); the last three run the real thing: Ray actors,
the CLI, torchrun, kill -9.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from tts.data.datasets import load_dataset
from tts.engine import load
from tts.models.builtin import resolve_model
from tts.train.draw import ProblemDraw
from tts.train.grpo_config import GRPOConfig
from tts.train.rollout import rollout
from tts.train.rollout_pipeline import RolloutPipeline

from .resume import grpo_recipe, train_by_cli, training_log

BUILTIN = resolve_model("builtin")


def versions_of_weights(count: int) -> list[dict[str, torch.Tensor]]:
    """`count` policies: the built-in model's weights, each next one nudged by seeded noise, so
    tokens sampled by different versions differ."""
    weights = AutoModelForCausalLM.from_pretrained(BUILTIN, dtype=torch.float32).state_dict()
    generator = torch.Generator().manual_seed(0)
    policies = []
    for version in range(count):
        policies.append(
            {
                name: tensor
                + version * 0.02 * tensor.std() * torch.randn(tensor.shape, generator=generator)
                if tensor.dim() == 2
                else tensor.clone()
                for name, tensor in weights.items()
            }
        )
    return policies


def async_config(tmp_path: Path, **overrides: object) -> GRPOConfig:
    values = {
        "out": tmp_path,
        "dataset": "synth:arith:2:40:train",
        "prompts_per_step": 3,
        "group_size": 2,
        "max_tokens": 48,
        "max_steps": 5,
        "eval_dataset": None,
        "rollout_workers": 1,
        "max_staleness": 2,
    }
    return GRPOConfig(**(values | overrides))


def run_pipeline(config: GRPOConfig) -> list:
    """Every step's batch from a pipeline over the in-process engine, publishing version s + 1
    (a different policy each) after taking batch s, as the trainer does."""
    policies = versions_of_weights(config.max_steps + 1)
    backend = load("builtin", "native", device="cpu")
    tokenizer = AutoTokenizer.from_pretrained(BUILTIN)
    draw = ProblemDraw(load_dataset(config.dataset), config)
    pipeline = RolloutPipeline(backend, tokenizer, draw, config, start=0)
    pipeline.publish(0, policies[0])
    batches = []
    for step in range(config.max_steps):
        batches.append(pipeline.batch(step))
        pipeline.publish(step + 1, policies[step + 1])
    pipeline.finish()
    return batches


def test_eta_two_batches_hold_no_token_older_than_two_versions_and_tag_each_right(tmp_path):
    config = async_config(tmp_path, partial_rollout_tokens=32)  # lag 1: eta - 1
    batches = run_pipeline(config)

    def version(step: int) -> int:  # the weights the pipeline samples step `step` with
        return max(0, step - config.lag)

    continued = 0
    for step, batch in enumerate(batches):
        assert len(batch.versions) == len(batch.sequences) == len(batch.behaviour)
        for seq, start, versions, logprobs in zip(
            batch.sequences, batch.starts, batch.versions, batch.behaviour
        ):
            n = len(seq) - start
            assert len(versions) == len(logprobs) == n
            assert step - versions[0] <= config.max_staleness  # the oldest token
            # Sampled whole in this step, or 32 tokens in the step before and the rest now.
            whole = [version(step)] * n
            paused = [version(step - 1)] * 32 + [version(step)] * (n - 32)
            assert versions in (whole, paused), (step, versions)
            continued += versions == paused and versions != whole
    assert continued > 0
    assert sum(batch.groups_kept for batch in batches) > 0
    oldest = [step - min(v[0] for v in b.versions) for step, b in enumerate(batches) if b.versions]
    assert max(oldest) == 2


def test_samples_that_would_be_staler_than_eta_are_dropped(tmp_path):
    # Three segments of 16 make 48 tokens, but with eta = 2 a sample may be paused only once.
    batches = run_pipeline(async_config(tmp_path, partial_rollout_tokens=16, max_steps=3))
    assert sum(batch.groups_stale for batch in batches) > 0
    for step, batch in enumerate(batches):
        assert all(step - versions[0] <= 2 for versions in batch.versions)


def test_a_paused_sample_continues_as_a_fresh_engine_given_its_prefix_and_the_new_weights(
    tmp_path,
):
    config = async_config(tmp_path, partial_rollout_tokens=12, max_staleness=1)
    old, new = versions_of_weights(2)
    backend = load("builtin", "native", device="cpu")
    backend.update_weights(old.items())
    tokenizer = AutoTokenizer.from_pretrained(BUILTIN)
    draw = ProblemDraw(load_dataset(config.dataset), config)
    carried = []
    rollout(backend, tokenizer, draw, config, 0, version=0, carried=carried)
    assert carried, "every sample of the built-in model outgrows 12 tokens"
    groups = list(carried)
    prefixes = [[list(sample.tokens) for sample in group.samples] for group in groups]
    paused = [[not sample.finished for sample in group.samples] for group in groups]
    backend.update_weights(new.items())
    rollout(backend, tokenizer, draw, config, 1, version=1, carried=carried)

    fresh = load("builtin", "native", device="cpu")
    fresh.update_weights(new.items())
    checked = 0
    for group, before, was_paused in zip(groups, prefixes, paused):
        for index, (sample, prefix) in enumerate(zip(group.samples, before)):
            assert sample.tokens[: len(prefix)] == prefix
            if not was_paused[index]:
                continue
            params = config.sampling_params(1, "continue", 1, group.problem.id, index)
            params = replace(params, max_tokens=12)
            [expected] = asyncio.run(fresh.generate(group.prompt_ids + prefix, params))
            assert sample.tokens[len(prefix) :] == expected.token_ids
            assert sample.versions == [0] * len(prefix) + [1] * len(expected.token_ids)
            checked += 1
    assert checked > 0


def train_weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "out" / "final" / "model.safetensors")


def test_eta_zero_on_a_ray_worker_trains_exactly_the_synchronous_weights(tmp_path):
    recipe = {"max_steps": 3, "save_every": 3, "eval_dataset": None}
    train_by_cli(grpo_recipe(tmp_path / "sync", **recipe))
    train_by_cli(grpo_recipe(tmp_path / "worker", **recipe, rollout_workers=1))
    sync, worker = train_weights(tmp_path / "sync"), train_weights(tmp_path / "worker")
    assert sync.keys() == worker.keys()
    assert all(torch.equal(sync[k], worker[k]) for k in sync)
    log = training_log(tmp_path / "worker")
    assert all(r["worker_tokens_per_s"] > 0 and 0 <= r["prefix_hit_rate"] <= 1 for r in log)


def ray_workers() -> list[int]:
    """The pids of the rollout workers' Ray processes on this machine."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and b"RolloutWorker" in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def launch(command: list[str], folder: Path) -> subprocess.Popen:
    return subprocess.Popen(
        command,
        env={**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"},
        start_new_session=True,
        stdout=(folder / "output.txt").open("ab"),
        stderr=subprocess.STDOUT,
    )


def wait_for_checkpoint(folder: Path, process: subprocess.Popen) -> None:
    state = folder / "out" / "checkpoint" / "trainer_state.pt"
    deadline = time.monotonic() + 300
    while not state.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert state.exists(), (folder / "output.txt").read_text()[-3000:]


def async_recipe(folder: Path) -> Path:
    return grpo_recipe(
        folder,
        dataset="synth:arith:1:40:train",
        group_size=2,
        max_tokens=48,
        max_steps=3,
        batch_size=4,
        save_every=1,
        eval_dataset=None,
        rollout_workers=1,
        max_staleness=1,
    )


def test_a_run_whose_rollout_worker_is_killed_resumes_from_its_checkpoint(tmp_path):
    recipe = async_recipe(tmp_path)
    command = [sys.executable, "-m", "tts.cli", "train", "grpo", "--recipe", str(recipe)]
    run = launch(command, tmp_path)
    wait_for_checkpoint(tmp_path, run)
    [worker] = ray_workers()
    os.kill(worker, signal.SIGKILL)
    assert run.wait(timeout=120) != 0
    assert "rollout worker died" in (tmp_path / "output.txt").read_text()
    assert launch(command, tmp_path).wait(timeout=300) == 0, (tmp_path / "output.txt").read_text()
    log = training_log(tmp_path)
    assert [r["step"] for r in log if "reward" in r] == [1, 2, 3]
    assert all(r["staleness_max"] <= 1 for r in log if "reward" in r)
    assert (tmp_path / "out" / "final" / "model.safetensors").is_file()
    assert not ray_workers()


def test_two_ranks_with_a_ray_worker_resume_after_a_rank_is_killed(tmp_path):
    recipe = async_recipe(tmp_path)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", "2", "-m", "tts.cli", "train", "grpo", "--recipe", str(recipe)]
    run = launch(command, tmp_path)
    wait_for_checkpoint(tmp_path, run)
    ranks = [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit()
        and b"tts.cli" in (entry / "cmdline").read_bytes()
        and int(entry.name) != run.pid
    ]
    os.kill(max(ranks), signal.SIGKILL)
    assert run.wait(timeout=120) != 0
    assert launch(command, tmp_path).wait(timeout=300) == 0, (tmp_path / "output.txt").read_text()
    log = training_log(tmp_path)
    assert [r["step"] for r in log if "reward" in r] == [1, 2, 3]
    assert (tmp_path / "out" / "final" / "model.safetensors").is_file()
    deadline = time.monotonic() + 30
    while ray_workers() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not ray_workers()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"max_staleness": 1}, "need rollout_workers >= 1"),
        ({"rollout_workers": 1, "partial_rollout_tokens": 8}, "needs max_staleness >= 1"),
        ({"rollout_workers": 1, "max_staleness": 1, "temperature": 0.7}, "needs temperature 1"),
    ],
)
def test_asynchronous_settings_that_cannot_work_are_refused_by_name(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        GRPOConfig(out=tmp_path, **overrides)
