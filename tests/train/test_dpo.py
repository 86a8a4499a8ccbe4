"""DPO and IPO on preference pairs: the losses against a hand computation, both preference
formats, the reference computed once and cached, learning on the built-in model, kill and
resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.train.resume import (
    assert_same_weights,
    kill_after_a_checkpoint,
    training_log,
    write_recipe,
)
from tts.cli import main
from tts.data.datasets import load_dataset
from tts.errors import TTSError
from tts.models.builtin import resolve_model
from tts.prompts import problem_messages
from tts.train.dpo import load_config, preference_loss, read_pairs, sequence_logprobs, train_dpo

BUILTIN = resolve_model("builtin")


def test_dpo_and_ipo_losses_match_a_hand_computation():
    # Margins h = (c - ref_c) - (r - ref_r): 0.5 and -1.5.
    chosen, ref_chosen = torch.tensor([-3.0, -5.0]), torch.tensor([-3.5, -4.0])
    rejected, ref_rejected = torch.tensor([-4.0, -4.5]), torch.tensor([-4.0, -5.0])
    args = (chosen, rejected, ref_chosen, ref_rejected, 0.2)
    dpo = (math.log(1 + math.exp(-0.1)) + math.log(1 + math.exp(0.3))) / 2  # -log sigmoid(b h)
    assert preference_loss(*args, "sigmoid").item() == pytest.approx(dpo)
    assert preference_loss(*args, "ipo").item() == pytest.approx(((0.5 - 2.5) ** 2 + 4.0**2) / 2)


def write_pairs(path: Path, count: int = 8) -> Path:
    """Conversational pairs on arithmetic problems: a short correct answer over a long wrong
    one, as `tts data pairs` writes them."""
    with path.open("w") as out:
        for problem in load_dataset("synth:arith:1:40:train")[:count]:
            record = {
                "prompt": problem_messages(problem.problem),
                "chosen": [{"role": "assistant", "content": f"\\boxed{{{problem.answer}}}"}],
                "rejected": [{"role": "assistant", "content": "Let me think. " * 6 + "\\boxed{0}"}],
                "meta": {"id": problem.id},
            }
            out.write(json.dumps(record) + "\n")
    return path


def recipe(folder: Path, data: Path, **overrides: object) -> Path:
    values = {
        "out": str(folder / "out"),
        "data": str(data),
        "beta": 0.1,
        "max_steps": 12,
        "batch_size": 4,
        "lr": 1e-4,
        "warmup_steps": 1,
        "save_every": 4,
        "log_every": 1,
    }
    return write_recipe(folder, values | overrides)


def test_both_preference_formats_are_read_and_a_bad_line_is_named(tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(BUILTIN)
    conversational = read_pairs(write_pairs(tmp_path / "c.jsonl", 2), tokenizer, 512)
    prompt, chosen, rejected = conversational[0]
    assert tokenizer.decode(chosen).startswith("\\boxed{") and len(rejected) > len(chosen)
    assert "Please reason step by step" in tokenizer.decode(prompt)
    standard = tmp_path / "s.jsonl"
    standard.write_text(json.dumps({"prompt": "2+2=", "chosen": " 4", "rejected": " 5"}) + "\n")
    [(prompt, chosen, rejected)] = read_pairs(standard, tokenizer, 512)
    assert tokenizer.decode(prompt + chosen) == "2+2= 4"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(standard.read_text() + json.dumps({"chosen": "x", "rejected": "y"}) + "\n")
    with pytest.raises(TTSError, match="line 2: expected prompt, chosen and rejected"):
        read_pairs(bad, tokenizer, 512)


def test_beta_has_no_default(tmp_path):
    path = recipe(tmp_path, write_pairs(tmp_path / "pairs.jsonl", 2))
    values = yaml.safe_load(path.read_text())
    del values["beta"]
    path.write_text(yaml.safe_dump(values))
    with pytest.raises(SystemExit) as refused:
        main(["train", "dpo", "--recipe", str(path)])
    assert "beta: Field required" in str(refused.value.code)


def test_dpo_raises_the_chosen_margin_caches_the_reference_and_resumes(tmp_path):
    data = write_pairs(tmp_path / "pairs.jsonl")
    config = load_config(recipe(tmp_path / "a", data))
    final = train_dpo(config)
    cached = json.loads((tmp_path / "a" / "out" / "reference_logprobs.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(BUILTIN)
    pairs = read_pairs(data, tokenizer, config.max_length)
    start = AutoModelForCausalLM.from_pretrained(BUILTIN, dtype=torch.float32)
    trained = AutoModelForCausalLM.from_pretrained(final, dtype=torch.float32)
    with torch.no_grad():
        ref_chosen, ref_rejected = sequence_logprobs(start, pairs, tokenizer.pad_token_id)
        chosen, rejected = sequence_logprobs(trained, pairs, tokenizer.pad_token_id)
    assert torch.tensor(cached["logprobs"]) == pytest.approx(
        torch.stack([ref_chosen, ref_rejected], dim=1), abs=1e-4
    )
    margins = (chosen - ref_chosen) - (rejected - ref_rejected)
    assert margins.mean() > 1.0  # the chosen answers gained on the rejected ones
    losses = [r["loss"] for r in training_log(tmp_path / "a") if "loss" in r]
    assert losses[0] == pytest.approx(math.log(2), abs=1e-4)  # h = 0 at the start
    assert losses[-1] < losses[0]

    killed = recipe(tmp_path / "b", data)
    stopped_at = kill_after_a_checkpoint(
        "tts.train.dpo", "train_dpo", killed, tmp_path / "b" / "out"
    )
    assert 4 <= stopped_at < 12
    train_dpo(load_config(killed))
    assert_same_weights(final, tmp_path / "b" / "out" / "final")
    steps = [r["step"] for r in training_log(tmp_path / "b") if "loss" in r]
    assert steps == list(range(1, 13))
