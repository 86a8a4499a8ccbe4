"""`tts data` output as TRL's trainers take it: what `tts data reject` and `tts data pairs` write
(the real commands, the built-in model) trains a step in SFTTrainer with `assistant_only_loss`
and in DPOTrainer, on CPU. A dev-only check: trl is a dev dependency, not one of tts's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("trl", reason="trl is a dev dependency (pip install -e '.[dev]')")

from datasets import load_dataset  # noqa: E402  (trl brings datasets)
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer  # noqa: E402

from tts.cli import main  # noqa: E402
from tts.models.builtin import resolve_model  # noqa: E402
from tts.train.sft import encode_conversation  # noqa: E402

# Two problems each: easy ones the built-in model solves for the SFT set, harder ones it also
# gets wrong for the pairs.
SAMPLING = ["--limit", "2", "--max-tokens", "96", "--temperature", "1.0"]
# One step, nothing written but what the trainer needs, on the CPU even where CUDA exists.
STEP = {"max_steps": 1, "per_device_train_batch_size": 2, "report_to": [], "use_cpu": True}
STEP |= {"save_strategy": "no", "logging_steps": 1, "learning_rate": 1e-3}


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """An SFT set and preference pairs, as the commands write them."""
    folder = tmp_path_factory.mktemp("tts-data")
    easy = ["--dataset", "synth:arith:1", "--n", "2", "--out", str(folder / "sft.jsonl")]
    hard = ["--dataset", "synth:arith:2", "--n", "4", "--out", str(folder / "pairs.jsonl")]
    main(["data", "reject", *SAMPLING, *easy])
    main(["data", "pairs", *SAMPLING, *hard])
    return folder


def read_json(path: Path, cache: Path):
    """The file as a user loads it into TRL (its cache kept out of the home folder)."""
    return load_dataset("json", data_files=str(path), split="train", cache_dir=str(cache))


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def assert_one_step_moved(trainer, before: dict[str, torch.Tensor]) -> None:
    assert trainer.state.global_step == 1
    moved = [n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])]
    assert moved, "one optimizer step changed no weight"


@pytest.mark.parametrize("model", ["builtin", "tiny_llama"])
def test_sft_trainer_with_assistant_only_loss_takes_tts_data(made, model, request, tmp_path):
    folder = resolve_model("builtin" if model == "builtin" else request.getfixturevalue(model))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    policy = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    data = read_json(made / "sft.jsonl", tmp_path)
    assert len(data) > 0, "the built-in model solves some arith:1 problems"
    args = SFTConfig(output_dir=str(tmp_path), assistant_only_loss=True, **STEP)
    trainer = SFTTrainer(model=policy, args=args, train_dataset=data, processing_class=tokenizer)
    # TRL's loss mask is the one tts's own SFT loop puts on the answer, end of turn included.
    for row, example in zip(data, trainer.train_dataset):
        ids, labels = encode_conversation(tokenizer, row["messages"], 10_000)
        assert (example["input_ids"], example["labels"]) == (ids, labels)
    before = weights(policy)
    trainer.train()
    assert_one_step_moved(trainer, before)


def test_dpo_trainer_takes_tts_preference_pairs(made, tmp_path):
    folder = resolve_model("builtin")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    policy = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    data = read_json(made / "pairs.jsonl", tmp_path)
    assert len(data) > 0, "the built-in model makes right and wrong arith:2 answers"
    args = DPOConfig(output_dir=str(tmp_path), **STEP)
    trainer = DPOTrainer(model=policy, args=args, train_dataset=data, processing_class=tokenizer)
    before = weights(policy)
    trainer.train()
    assert_one_step_moved(trainer, before)
