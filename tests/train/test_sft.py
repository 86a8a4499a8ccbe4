"""The SFT loop end to end on a tiny new model: learning, checkpoints, kill and resume."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
import yaml
from transformers import AutoTokenizer

from tests.train.resume import (
    Killed,
    assert_same_weights,
    die_at,
    kill_after_a_checkpoint,
    training_log,
)
from tts.cli import main
from tts.data.jsonl import read_records
from tts.engine import SamplingParams, load
from tts.errors import TTSError
from tts.models.builtin import resolve_model
from tts.train import loop
from tts.train.curves import default_metrics
from tts.train.optimizer import lr_at
from tts.train.sft import (
    SFTConfig,
    build_model,
    encode_conversation,
    load_config,
    read_conversations,
    train_sft,
)

TINY = {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2}
TINY |= {"intermediate_size": 128, "vocab_size": 400}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sft") / "data.jsonl"
    lines = []
    for a in range(1, 21):
        for b in range(1, 6):
            answer = f"{a} + {b} = {a + b}\n\nThe answer is \\boxed{{{a + b}}}."
            messages = [{"role": "user", "content": f"What is {a} + {b}?"}]
            lines.append(
                json.dumps({"messages": messages + [{"role": "assistant", "content": answer}]})
            )
    path.write_text("\n".join(lines) + "\n")
    return path


def recipe(tmp_path: Path, data: Path, **overrides) -> Path:
    values = {"data": str(data), "out": str(tmp_path / "out"), "init": TINY, "max_steps": 12}
    values |= {"batch_size": 8, "lr": 3e-3, "warmup_steps": 2, "save_every": 3, "log_every": 1}
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(values | overrides))
    return path


def test_loss_falls_and_the_result_is_a_model_folder_the_engine_runs(tmp_path, data):
    final = train_sft(load_config(recipe(tmp_path, data, max_steps=40)))
    log = [json.loads(line) for line in (tmp_path / "out" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 41))
    assert log[-1]["loss"] < log[0]["loss"] * 0.6
    engine = load(final, backend="native", device="cpu", num_blocks=64)
    prompt = engine.tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 3 + 4?"}], add_generation_prompt=True, tokenize=False
    )
    (completion,) = asyncio.run(
        engine.generate(prompt, SamplingParams(temperature=0, max_tokens=8))
    )
    assert completion.token_ids


def test_loss_is_on_the_answer_only(tmp_path, data):
    config = load_config(recipe(tmp_path, data))
    conversations = read_conversations(config.data)
    _, tokenizer = build_model(config, conversations)
    ids, labels = encode_conversation(tokenizer, conversations[0], 512)
    answer = tokenizer.decode([i for i, label in zip(ids, labels) if label != -100])
    assert answer.startswith("1 + 1 = 2") and answer.endswith("<|im_end|>\n")
    assert "What is" not in answer


@pytest.mark.parametrize("model", ["builtin", "tiny_llama", "tiny_qwen"])
def test_the_chat_template_marks_as_the_assistants_what_sft_trains_on(model, request):
    """TRL's assistant_only_loss reads the template's generation markers: they must cover the
    tokens tts's own loop trains on, the answer and its end of turn, and nothing else."""
    folder = resolve_model("builtin" if model == "builtin" else request.getfixturevalue(model))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 3 + 4?"},
        {"role": "assistant", "content": "3 + 4 = 7\n\nThe answer is \\boxed{7}."},
    ]
    marked = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids, labels = encode_conversation(tokenizer, messages, 10_000)
    assert marked["input_ids"] == ids
    assert [i if m else -100 for i, m in zip(ids, marked["assistant_masks"])] == labels


def test_learning_rate_warms_up_then_decays():
    config = SFTConfig(
        data="x", out="y", model="z", lr=1.0, min_lr=0.1, warmup_steps=10, max_steps=110
    )
    assert lr_at(0, config) == pytest.approx(0.1) and lr_at(9, config) == pytest.approx(1.0)
    assert lr_at(60, config) == pytest.approx(0.55) and lr_at(110, config) == pytest.approx(0.1)


def test_a_steps_micro_batches_are_cut_in_order_of_length_from_the_same_examples():
    examples = [[0] * n for n in (9, 1, 7, 3, 5, 2, 8, 4, 6, 10, 11, 12)]
    config = SFTConfig(data="x", out="y", model="z", batch_size=2, grad_accum=3, seed=3)
    for step in range(4):
        plain = loop.batches(examples, config, step)
        cut = loop.batches(examples, config, step, length=len)
        assert sorted(map(len, sum(cut, []))) == sorted(map(len, sum(plain, [])))
        widths = [len(e) for micro in cut for e in micro]
        assert widths == sorted(widths) and len(cut) == 3 and all(len(m) == 2 for m in cut)


def test_killed_training_resumes_to_the_same_weights(tmp_path, data):
    train_sft(load_config(recipe(tmp_path / "a", data)))
    killed_recipe = recipe(tmp_path / "b", data)
    stopped_at = kill_after_a_checkpoint(
        "tts.train.sft", "train_sft", killed_recipe, tmp_path / "b" / "out"
    )
    assert 3 <= stopped_at < 12
    train_sft(load_config(killed_recipe))
    assert_same_weights(tmp_path / "a" / "out" / "final", tmp_path / "b" / "out" / "final")
    whole, resumed = training_log(tmp_path / "a"), training_log(tmp_path / "b")
    assert [r["step"] for r in resumed] == list(range(1, 13))  # no step logged twice
    assert [r["tokens"] for r in resumed] == [r["tokens"] for r in whole]


def test_a_kill_inside_a_checkpoint_swap_resumes_from_that_checkpoint_and_keeps_the_log(
    tmp_path, data, monkeypatch
):
    train_sft(load_config(recipe(tmp_path / "a", data, max_steps=9)))
    killed = recipe(tmp_path / "b", data, max_steps=9)
    out = tmp_path / "b" / "out"
    real_save = loop.save

    def save_and_die_between_the_renames(model, tokenizer, folder, state=None):
        if state is not None and state["step"] == 6:
            die_at(monkeypatch, 2, [(os, "replace")])  # step 3's folder aside, 6's not in place
        real_save(model, tokenizer, folder, state)

    monkeypatch.setattr(loop, "save", save_and_die_between_the_renames)
    with pytest.raises(Killed):
        train_sft(load_config(killed))
    monkeypatch.undo()
    assert not (out / "checkpoint").exists() and (out / "checkpoint.old").exists()
    before = training_log(tmp_path / "b")
    assert [r["step"] for r in before] == list(range(1, 7))

    train_sft(load_config(killed))
    after = training_log(tmp_path / "b")
    assert after[:6] == before  # resumed at step 6: its lines kept as they were, not re-run
    assert [r["step"] for r in after] == list(range(1, 10))
    assert_same_weights(tmp_path / "a" / "out" / "final", out / "final")


def test_a_token_budget_gives_data_of_different_lengths_the_same_compute(tmp_path, data):
    longer = tmp_path / "longer.jsonl"
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    for row in rows:
        answer = row["messages"][-1]
        answer["content"] = "Let me think it over twice.\n\n" * 3 + answer["content"]
    longer.write_text("".join(json.dumps(row) + "\n" for row in rows))
    for name, path in (("short", data), ("long", longer)):
        main(
            [
                "train",
                "sft",
                "--recipe",
                str(recipe(tmp_path / name, path)),
                "--token-budget",
                "6000",
            ]
        )
    short, long = training_log(tmp_path / "short"), training_log(tmp_path / "long")
    assert len(long) < len(short) / 1.5  # fewer steps of longer sequences
    for log in (short, long):
        assert log[-1]["tokens"] == pytest.approx(6000, rel=0.2)


def test_bad_input_is_named(tmp_path, data):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    with pytest.raises(TTSError, match="line 1: expected messages"):
        train_sft(load_config(recipe(tmp_path, bad)))
    with pytest.raises(TTSError, match="exactly one of model"):
        load_config(recipe(tmp_path, data, model="builtin"))


def test_the_command_fine_tunes_the_builtin_model_as_the_other_loops_take_it(
    tmp_path, data, capsys
):
    recipe_file = recipe(tmp_path, data)  # a recipe for a new model: --model replaces it
    main(["train", "sft", "--recipe", str(recipe_file), "--model", "builtin", "--max-steps", "1"])
    final = Path(capsys.readouterr().out.strip().splitlines()[-1])
    builtin = resolve_model("builtin")
    assert (
        json.loads((final / "config.json").read_text())["hidden_size"]
        == json.loads((builtin / "config.json").read_text())["hidden_size"]
    )
    assert (final / "tokenizer.json").read_bytes() == (builtin / "tokenizer.json").read_bytes()


def test_the_command_trains_and_reports_the_final_folder(tmp_path, data, capsys):
    main(["train", "sft", "--recipe", str(recipe(tmp_path, data)), "--max-steps", "2"])
    final = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert final == tmp_path / "out" / "final" and (final / "model.safetensors").exists()


def test_a_recipe_can_make_its_own_synthetic_data(tmp_path):
    data = tmp_path / "made.jsonl"
    synth = [
        {"task": "arith", "difficulty": 1, "n": 30},
        {"task": "arith", "difficulty": 2, "n": 20},
    ]
    final = train_sft(load_config(recipe(tmp_path, data, synth=synth, max_steps=2)))
    assert len(data.read_text().splitlines()) == 50 and (final / "config.json").exists()


def test_periodic_eval_scores_the_checkpoint_through_the_engine(tmp_path, data):
    config = recipe(tmp_path, data, max_steps=4, eval_dataset="synth:arith:1:4", eval_every=2)
    train_sft(load_config(config, eval_max_tokens=16))
    log = [json.loads(x) for x in (tmp_path / "out" / "log.jsonl").read_text().splitlines()]
    evals = [r for r in log if "eval_accuracy" in r]
    assert [r["step"] for r in evals] == [2, 4]
    assert all(0.0 <= r["eval_accuracy"] <= 1.0 for r in evals)


def test_plot_draws_what_an_sft_log_has_without_being_told(tmp_path, data, capsys):
    out = tmp_path / "out"
    config = recipe(tmp_path, data, max_steps=4, eval_dataset="synth:arith:1:4", eval_every=2)
    train_sft(load_config(config, eval_max_tokens=8))
    assert default_metrics(read_records(out / "log.jsonl")) == ["loss", "eval_accuracy"]
    capsys.readouterr()
    main(["train", "plot", str(out)])
    png = Path(capsys.readouterr().out.strip())
    assert png == out / "curves.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit, match="has no reward; it has eval_accuracy, grad_norm, loss"):
        main(["train", "plot", str(out), "--metrics", "reward"])


def test_init_file_replaces_the_recipes_starting_point(tmp_path, data, capsys):
    sizes = tmp_path / "sizes.yaml"
    sizes.write_text(yaml.safe_dump(TINY | {"num_layers": 1}))
    main(
        [
            "train",
            "sft",
            "--recipe",
            str(recipe(tmp_path, data)),
            "--max-steps",
            "1",
            "--init",
            str(sizes),
        ]
    )
    config = json.loads((tmp_path / "out" / "final" / "config.json").read_text())
    assert config["num_hidden_layers"] == 1
