"""`tts train star` and its data job: the rationalisation prompt, the hint's absence from the
training text, and STaR's iterations on the built-in model, resumed after a kill."""

from __future__ import annotations

import asyncio

import pytest

from tts.data import rationales
from tts.data.problem import Problem
from tts.data.rationales import RationalesConfig, hinted, process
from tts.data.units import Context
from tts.errors import TTSError
from tts.search import Candidate
from tts.train.star import load_config, train_star

from .resume import assert_same_weights, kill_after_a_checkpoint, write_recipe

PROBLEM = Problem("p1", "Evaluate 88 + 27 * 8 - 5 - 84.", "215")


def test_rationalisation_poses_the_problem_with_its_answer_as_a_hint():
    hint = hinted(PROBLEM, "Hint: the answer is {answer}.")
    assert hint.problem == "Evaluate 88 + 27 * 8 - 5 - 84.\n\nHint: the answer is 215."
    assert hint.id == "p1/hint" and hint.answer == "215"


def test_a_rationalised_record_poses_the_problem_without_the_hint(tmp_path, monkeypatch):
    """A stand-in sampler: the built-in model does not follow hints (posed with one, it
    derails: benchmarks/results/rl_algorithms.json's STaR runs rationalise almost nothing),
    so the candidates are given. Unaided every one is wrong; with the hint one is right, and
    one right one that cites the hint is dropped."""
    asked = []

    async def sample(problem, config, context):
        asked.append(problem.problem)
        if "Hint" not in problem.problem:
            return [Candidate("... \\boxed{275}.", "275")], [False]
        cited = Candidate("As the hint says, \\boxed{215}.", "215", tokens=9)
        right = Candidate("88 + 216 - 5 - 84 = 215. \\boxed{215}.", "215", tokens=20)
        return [cited, right], [True, True]

    monkeypatch.setattr(rationales, "sample", sample)
    config = RationalesConfig(out=tmp_path / "data.jsonl", dataset="synth:arith:3:4")
    output = asyncio.run(process(PROBLEM, config, Context(backend=None)))
    assert asked == [PROBLEM.problem, hinted(PROBLEM, config.hint).problem]
    [record] = output.records
    assert record["meta"]["rationalized"] and record["meta"]["tokens"] == 20
    user, answer = record["messages"]
    assert user["content"].startswith(PROBLEM.problem) and "Hint" not in user["content"]
    assert answer["content"] == "88 + 216 - 5 - 84 = 215. \\boxed{215}."
    plain = config.model_copy(update={"rationalize": False})
    asked.clear()
    assert asyncio.run(process(PROBLEM, plain, Context(backend=None))).records == []
    assert asked == [PROBLEM.problem]


def star_recipe(folder, **overrides):
    values = {
        "out": str(folder / "out"),
        "dataset": "synth:arith:2:40:train",
        "limit": 6,
        "iterations": 2,
        "n": 2,
        "max_tokens": 96,
        "sft": {"max_steps": 6, "batch_size": 4, "lr": 1e-4, "warmup_steps": 1, "save_every": 2},
        "eval_dataset": "synth:arith:2:8",
        "eval_limit": 4,
        "eval_samples": 2,
    }
    return write_recipe(folder, values | overrides)


def test_star_iterates_keeps_each_iteration_and_resumes_after_a_kill(tmp_path):
    result = train_star(load_config(star_recipe(tmp_path / "a")))
    out = tmp_path / "a" / "out"
    assert len(result["eval_pass@1_by_iteration"]) == 3  # the base model, then 2 iterations
    for iteration in (1, 2):
        folder = out / f"iteration_{iteration}"
        assert (folder / "data.jsonl").stat().st_size > 0
        assert (folder / "sft" / "final" / "model.safetensors").exists()

    killed = star_recipe(tmp_path / "b")
    second = tmp_path / "b" / "out" / "iteration_2" / "sft"
    stopped_at = kill_after_a_checkpoint("tts.train.star", "train_star", killed, second)
    assert 2 <= stopped_at < 6
    resumed = train_star(load_config(killed))
    assert resumed["eval_pass@1_by_iteration"] == result["eval_pass@1_by_iteration"]
    assert_same_weights(out / "iteration_2" / "sft" / "final", second / "final")


def test_star_refuses_sft_settings_it_sets_itself(tmp_path):
    with pytest.raises(TTSError, match="sft: data, model are set by STaR"):
        load_config(star_recipe(tmp_path, sft={"model": "builtin", "data": "x.jsonl"}))
    with pytest.raises(TTSError, match="nonsense"):
        load_config(star_recipe(tmp_path, sft={"nonsense": 1}))
