"""`tts train grpo` end to end on the built-in model through the native engine, real files;
the reward mix and the problem draw on small cases."""

from __future__ import annotations

import asyncio

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tts.cli import main
from tts.data.datasets import Problem, load_dataset
from tts.engine import SamplingParams, load
from tts.engine.native.engine import NativeBackend
from tts.errors import TTSError
from tts.models.builtin import resolve_model
from tts.train.draw import ProblemDraw
from tts.train.grpo import load_config, train_grpo
from tts.train.grpo_config import GRPOConfig
from tts.train.grpo_rewards import RewardConfig, group_rewards
from tts.train.policy_update import token_logprobs, update
from tts.train.rollout import rollout

from .resume import assert_same_weights, grpo_recipe, kill_after_a_checkpoint, training_log


def test_grpo_trains_logs_and_resumes_after_a_kill_to_the_same_weights(tmp_path, capsys):
    main(["train", "grpo", "--recipe", str(grpo_recipe(tmp_path / "a"))])
    printed = capsys.readouterr().out
    assert "final:" in printed and "eval_pass@1:" in printed
    steps = [r for r in training_log(tmp_path / "a") if "reward" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    for key in ("accuracy", "length_mean", "length_max", "clip_fraction", "entropy", "loss"):
        assert all(key in r for r in steps), key
    assert all((r["truncated"] > 0) == (r["length_max"] == 96) for r in steps)  # the budget
    assert all(r["rollout_tokens_per_s"] > 0 and r["train_tokens_per_s"] > 0 for r in steps)
    evals = [r["step"] for r in training_log(tmp_path / "a") if "eval_pass@1" in r]
    assert evals == [0, 2, 4]
    start = resolve_model("builtin") / "model.safetensors"
    final = tmp_path / "a" / "out" / "final"
    with pytest.raises(AssertionError):  # training moved the weights
        assert_same_weights(start.parent, final)

    killed = grpo_recipe(tmp_path / "b")
    out = killed.parent / "out"
    stopped_at = kill_after_a_checkpoint("tts.train.grpo", "train_grpo", killed, out)
    assert 2 <= stopped_at < 4
    train_grpo(load_config(killed))
    assert_same_weights(final, tmp_path / "b" / "out" / "final")
    assert [r["step"] for r in training_log(tmp_path / "b") if "reward" in r] == [1, 2, 3, 4]

    png = tmp_path / "curves.png"
    main(["train", "plot", str(tmp_path / "a" / "out"), "--out", str(png)])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit, match="has no nothing_here"):
        main(["train", "plot", str(tmp_path / "a" / "out"), "--metrics", "nothing_here"])


def test_the_engine_samples_from_the_trained_weights(tmp_path):
    """After training, the rollout engine holds the trainer's weights: its log-probabilities
    are those of the final folder loaded by transformers."""
    config = load_config(grpo_recipe(tmp_path, max_steps=1, eval_dataset=None, lr=1e-3))
    train_grpo(config)
    final = config.out / "final"
    prompt = "Evaluate 3 + 4 * 2."
    params = SamplingParams(temperature=0, max_tokens=8, logprobs=2)
    ours = asyncio.run(load(final, backend="native", device="cpu").generate(prompt, params))[0]
    theirs = asyncio.run(load(final, backend="hf", device="cpu").generate(prompt, params))[0]
    start = asyncio.run(load("builtin", backend="hf", device="cpu").generate(prompt, params))[0]
    for a, b in zip(ours.logprobs, theirs.logprobs):
        assert all(abs(a[k] - b[k]) < 1e-4 for k in a)
    assert any(
        abs(a[k] - s.get(k, 0.0)) > 1e-4 for a, s in zip(theirs.logprobs, start.logprobs) for k in a
    )


def test_freeing_the_engine_kv_during_updates_changes_no_weight(tmp_path, monkeypatch):
    """With `release_engine_memory` the engine's KV cache is gone during each update and back
    for the next rollout, whose tokens, and so the weights, are those of a run that keeps it."""
    calls = []

    def counted(name):
        real = getattr(NativeBackend, name)
        return lambda self: (calls.append(name), real(self))

    for name in ("release_memory", "reclaim_memory"):
        monkeypatch.setattr(NativeBackend, name, counted(name))
    kept = load_config(grpo_recipe(tmp_path / "kept", max_steps=2, eval_dataset=None))
    assert not kept.release_engine_memory  # on CPU the default leaves the KV in place
    train_grpo(kept)
    assert calls == []
    freed = load_config(
        grpo_recipe(tmp_path / "freed", max_steps=2, eval_dataset=None, release_engine_memory=True)
    )
    train_grpo(freed)
    assert calls == ["release_memory", "reclaim_memory"] * 2
    final = "final/model.safetensors"
    assert (kept.out / final).read_bytes() == (freed.out / final).read_bytes()


def test_dynamic_sampling_drops_groups_whose_rewards_are_all_equal(tmp_path):
    # Difficulty 1: the built-in model gets most groups all right, so most are dropped.
    config = load_config(
        grpo_recipe(tmp_path, dataset="synth:arith:1:40:train", max_steps=1, eval_dataset=None),
        loss={"variant": "dapo"},
    )
    assert config.dynamic_sampling
    train_grpo(config)
    (step,) = [r for r in training_log(tmp_path) if "reward" in r]
    assert step["groups_drawn"] > step["groups_kept"]
    assert step["groups_kept"] <= config.prompts_per_step


def test_rewards_add_up_by_weight():
    texts = ["The answer is \\boxed{7}.", "The answer is \\boxed{8}."]
    ids = [[1] * 10, [2, 3] * 30]
    problem = Problem("p", "What is 3 + 4?", "7")
    plain, parts = group_rewards(texts, ids, problem, 100, RewardConfig())
    assert plain == [1.0, 0.0] and parts == {"accuracy": [1.0, 0.0]}
    shaped = RewardConfig(correctness="cosine", repetition_weight=1.0, repetition_ngram=4)
    totals, parts = group_rewards(texts, ids, problem, 100, shaped)
    assert parts["accuracy"] == [1.0, 0.0]
    assert parts["repetition"][0] == 0.0 and parts["repetition"][1] < -0.9  # wrong, one loop
    cosine, repetition = parts["cosine"], parts["repetition"]
    assert totals == pytest.approx([cosine[0], cosine[1] + repetition[1]])
    assert 1.0 < parts["cosine"][0] < 2.0 and -10.0 < parts["cosine"][1] < 0.0


def test_problems_are_drawn_uniformly_by_curriculum_or_by_failure(tmp_path):
    problems = [Problem(f"p{i}", f"q{i}", "1", {"pass_rate": i / 9}) for i in range(10)]
    config = GRPOConfig(out=tmp_path, problem_draw="curriculum", max_steps=100, prompts_per_step=2)
    early = ProblemDraw(problems, config).draw(0, 0, 2)
    assert {p.id for p in early} <= {"p9", "p8", "p7"}  # the easiest quarter (rounded up)
    failure = ProblemDraw(problems, config.model_copy(update={"problem_draw": "failure"}))
    drawn = [p.id for step in range(200) for p in failure.draw(step, 0, 1)]
    assert drawn.count("p0") > 5 * max(drawn.count("p9"), 1)  # never solved vs always solved
    with pytest.raises(TTSError, match="the curriculum draw needs pass rates"):
        ProblemDraw(load_dataset("synth:arith:2:10:train"), config)


def test_one_update_moves_probability_towards_the_completions_with_higher_advantage(tmp_path):
    config = load_config(grpo_recipe(tmp_path, lr=1e-3, warmup_steps=0, eval_dataset=None))
    model = AutoModelForCausalLM.from_pretrained(resolve_model("builtin"), dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("builtin"))
    backend = load("builtin", "native", device="cpu")
    draw = ProblemDraw(load_dataset(config.dataset), config)
    batch = rollout(backend, tokenizer, draw, config, step=0)
    assert batch.groups_kept == config.prompts_per_step and any(batch.advantages)

    def completion_logprobs() -> torch.Tensor:
        with torch.no_grad():
            logprobs, mask, _ = token_logprobs(
                model, batch.sequences, batch.starts, tokenizer.pad_token_id, config.temperature
            )
        return (logprobs * mask).sum(dim=1)

    before = completion_logprobs()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
    update(model, None, optimizer, batch, tokenizer.pad_token_id, config)
    moved = completion_logprobs() - before
    advantages = torch.tensor(batch.advantages)
    assert (advantages * moved).sum() > 0
    assert moved[advantages > 0].mean() > moved[advantages < 0].mean()
