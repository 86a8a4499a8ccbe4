"""Checkpoints and the training log survive a kill at every point of their writing: the next
start resumes from the last checkpoint written whole, never from step 0, and the log keeps
every line up to that step."""

from __future__ import annotations

import itertools
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.train.resume import Killed, die_at
from tts.data.jsonl import RecordWriter, read_records
from tts.train.checkpoint import open_log, resume_state, save
from tts.train.recipe import TrainConfig

# Everything that changes or makes durable the files of a checkpoint: a kill before any one of
# them is a state the swap can be left in.
FILE_STEPS = [(os, "replace"), (os, "rename"), (shutil, "rmtree"), (os, "fsync"), (torch, "save")]


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_llama):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    return model, AutoTokenizer.from_pretrained(tiny_llama)


def write_log(config: TrainConfig, steps: range) -> None:
    with RecordWriter(config.out / "log.jsonl") as log:
        for step in steps:
            log.write({"step": step, "loss": 1.0 / step})


def logged_steps(config: TrainConfig) -> list[int]:
    return [r["step"] for r in read_records(config.out / "log.jsonl")]


def test_a_kill_anywhere_in_a_checkpoint_swap_resumes_from_a_whole_checkpoint(
    tmp_path, model_and_tokenizer, monkeypatch
):
    model, tokenizer = model_and_tokenizer
    weights = {2: {k: v.clone() for k, v in model.state_dict().items()}}
    weights[4] = {k: v + 1 for k, v in weights[2].items()}
    resumed_from = []
    for n in itertools.count(1):
        config = TrainConfig(out=tmp_path / str(n), max_steps=8)
        folder = config.out / "checkpoint"

        def state(step: int) -> dict:
            return {"step": step, "config": config.model_dump(mode="json")}  # noqa: B023

        model.load_state_dict(weights[2])
        save(model, tokenizer, folder, state(2))
        write_log(config, range(1, 5))  # steps 3 and 4 were logged before their checkpoint
        model.load_state_dict(weights[4])
        die_at(monkeypatch, n, FILE_STEPS)
        try:
            save(model, tokenizer, folder, state(4))
            finished = True
        except Killed:
            finished = False
        finally:
            monkeypatch.undo()

        step = resume_state(config)["step"]
        resumed_from.append(step)
        on_disk = load_file(folder / "model.safetensors")
        assert all(torch.equal(on_disk[k], weights[step][k]) for k in on_disk), n
        assert sorted(p.name for p in config.out.iterdir()) == ["checkpoint", "log.jsonl"]
        open_log(config, step).close()
        assert logged_steps(config) == list(range(1, step + 1)), n
        if finished:
            break
    assert resumed_from[0] == 2 and resumed_from[-1] == 4
    # Once the new checkpoint is whole and the old one moved aside, only the new one is left.
    assert resumed_from == sorted(resumed_from)


def test_a_kill_while_the_log_is_cut_back_loses_no_line_up_to_the_checkpoint(tmp_path, monkeypatch):
    for n in itertools.count(1):
        config = TrainConfig(out=tmp_path / str(n), max_steps=8)
        write_log(config, range(1, 7))
        die_at(monkeypatch, n, FILE_STEPS)
        try:
            open_log(config, 4).close()
            finished = True
        except Killed:
            finished = False
        finally:
            monkeypatch.undo()
        assert logged_steps(config) in (list(range(1, 7)), list(range(1, 5))), n
        open_log(config, 4).close()  # the next start cuts it again
        assert logged_steps(config) == [1, 2, 3, 4]
        if finished:
            break


def test_a_kill_in_the_first_checkpoint_restarts_from_step_0_or_resumes_from_it(
    tmp_path, model_and_tokenizer, monkeypatch
):
    model, tokenizer = model_and_tokenizer
    for n in itertools.count(1):
        config = TrainConfig(out=tmp_path / str(n), max_steps=8)
        write_log(config, range(1, 3))
        die_at(monkeypatch, n, FILE_STEPS)
        try:
            state = {"step": 2, "config": config.model_dump(mode="json")}
            save(model, tokenizer, config.out / "checkpoint", state)
            finished = True
        except Killed:
            finished = False
        finally:
            monkeypatch.undo()
        resumed = resume_state(config)
        step = 0 if resumed is None else resumed["step"]
        assert step == 2 or not finished
        assert {p.name for p in config.out.iterdir()} <= {"checkpoint", "log.jsonl"}
        open_log(config, step).close()
        assert logged_steps(config) == list(range(1, step + 1))
        if finished:
            break
