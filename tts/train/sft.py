"""Supervised fine-tuning on chat data: one readable loop, nanoGPT style.

Data is the SFT format of DESIGN.md (`{"messages": [...], "meta": {...}}` per line). Each
conversation is rendered with the model's chat template and the loss falls on the last
(assistant) message's tokens only, its end-of-turn token included, so the model learns to stop.
Batches are padded (with gradient accumulation, each step's micro-batches are cut in order of
length, so each pads little); AdamW with linear warmup then cosine decay.

With `eval_dataset` set, every `eval_every` steps the checkpoint is scored greedily through the
native engine (`tts.train.evaluate.pass_at_1` with one greedy sample; the accuracy goes to the
log). Checkpoints, resuming and the log are the shared supervised loop's (`tts.train.loop`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from tts.data.datasets import load_dataset
from tts.data.jsonl import iter_jsonl
from tts.data.synthetic import Style, write_sft
from tts.engine import SamplingParams, load
from tts.errors import TTSError
from tts.models.tiny import CONFIG_CLASSES, build_tokenizer
from tts.prompts import DEFAULT_INSTRUCTION
from tts.train.checkpoint import recover, resume_state, save
from tts.train.evaluate import pass_at_1
from tts.train.loop import SupervisedConfig, run_loop
from tts.train.recipe import load_recipe, model_folder


class ModelInit(BaseModel):
    """A new model from scratch: architecture sizes, and a tokenizer trained on the data."""

    model_config = ConfigDict(extra="forbid")

    family: Literal["llama", "qwen2", "qwen3"] = Field("qwen2", description="architecture")
    hidden_size: int = Field(256, ge=8, description="width")
    num_layers: int = Field(4, ge=1, description="decoder layers")
    num_heads: int = Field(4, ge=1, description="attention heads")
    num_kv_heads: int = Field(2, ge=1, description="key/value heads (GQA)")
    intermediate_size: int = Field(768, ge=8, description="MLP width")
    max_position_embeddings: int = Field(2048, ge=16, description="longest sequence")
    vocab_size: int = Field(512, ge=300, description="BPE vocabulary trained on the data")


class SynthData(BaseModel):
    """Synthetic training problems to write into `data` before training (`tts data synth`)."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field("arith", description="synthetic task")
    difficulty: int = Field(2, description="difficulty level")
    n: int = Field(1000, ge=1, description="problems")
    style: Style = Field(
        "short", description="trace style: short, long, search or path (search: countdown)"
    )
    error_rate: float = Field(0.3, ge=0, le=1, description="long style: slips per step")
    seed: int = Field(0, description="problem seed")
    max_search_lines: int | None = Field(
        None, ge=1, description="leave out problems whose search stream is longer (countdown)"
    )


class SFTConfig(SupervisedConfig):
    """One SFT run (the loop's settings are `SupervisedConfig`'s)."""

    data: Path = Field(description="SFT JSON Lines file")
    synth: list[SynthData] = Field([], description="synthetic problems appended to data first")
    model: str | None = Field(None, description="Hugging Face folder to fine-tune, or builtin")
    init: ModelInit | None = Field(None, description="or: a new model from these sizes")
    eval_dataset: str | None = Field(
        None, description="scored greedily every eval_every steps, e.g. synth:arith:3:100"
    )
    eval_every: int = Field(500, ge=1, description="steps between evaluations")
    eval_max_tokens: int = Field(256, ge=1, description="most tokens per eval answer")
    token_budget: int | None = Field(
        None,
        ge=1,
        description="train on about this many tokens (padding excluded) instead of max_steps: "
        "runs on data of different lengths then get the same compute",
    )

    @model_validator(mode="after")
    def _one_start(self) -> SFTConfig:
        if (self.model is None) == (self.init is None):
            raise ValueError("give exactly one of model (a folder) and init (a new model)")
        return self


def load_config(path: str | Path, **overrides: Any) -> SFTConfig:
    """An SFTConfig from a YAML recipe, with command-line overrides on top (a given `model` or
    `init` replaces the recipe's choice of starting point)."""
    return load_recipe(SFTConfig, path, overrides, replaced_together=("model", "init"))


def encode_conversation(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], max_length: int
) -> tuple[list[int], list[int]]:
    """Token ids of a rendered conversation and its labels (-100 except on the last message)."""
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    prompt = tokenizer.apply_chat_template(
        messages[:-1], add_generation_prompt=True, tokenize=False
    )
    if not full.startswith(prompt):
        raise TTSError("the chat template does not render the prompt as a prefix of the chat")
    prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
    answer_ids = tokenizer(full[len(prompt) :], add_special_tokens=False).input_ids
    ids = (prompt_ids + answer_ids)[:max_length]
    labels = ([-100] * len(prompt_ids) + answer_ids)[:max_length]
    return ids, labels


def read_conversations(path: Path) -> list[list[dict[str, str]]]:
    conversations = []
    for number, row in iter_jsonl(path):
        messages = row.get("messages")
        if (
            not isinstance(messages, list)
            or not messages
            or not all(isinstance(m, dict) and {"role", "content"} <= m.keys() for m in messages)
            or messages[-1]["role"] != "assistant"
        ):
            raise TTSError(
                f"{path}, line {number}: expected messages [{{role, content}}, ...] ending with "
                "the assistant's answer"
            )
        conversations.append(messages)
    if not conversations:
        raise TTSError(f"{path} has no conversations")
    return conversations


def build_model(
    config: SFTConfig, conversations: list[list[dict[str, str]]]
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model and tokenizer to train: loaded from a folder, or new from `init`."""
    if config.model is not None:
        folder = model_folder(config.model)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32), tokenizer
    init = config.init
    corpus = (m["content"] for messages in conversations for m in messages)
    tokenizer = build_tokenizer(init.vocab_size, bos=init.family == "llama", corpus=corpus)
    model_config = CONFIG_CLASSES[init.family](
        vocab_size=len(tokenizer),
        hidden_size=init.hidden_size,
        intermediate_size=init.intermediate_size,
        num_hidden_layers=init.num_layers,
        num_attention_heads=init.num_heads,
        num_key_value_heads=init.num_kv_heads,
        max_position_embeddings=init.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    # Train on the tokenizer exactly as loaders will read it back (transformers may rebuild
    # parts of it by model type): round-trip it through a folder with the model's config.
    with tempfile.TemporaryDirectory() as folder:
        model_config.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    torch.manual_seed(config.seed)
    return AutoModelForCausalLM.from_config(model_config), tokenizer


def collate(
    batch: list[tuple[list[int], list[int]]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Padded ids, labels (-100 on padding) and attention mask of a micro-batch, on `device`."""
    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (seq, lab) in enumerate(batch):
        ids[row, : len(seq)], labels[row, : len(lab)], mask[row, : len(seq)] = (
            torch.tensor(seq),
            torch.tensor(lab),
            1,
        )
    return ids.to(device), labels.to(device), mask.to(device)


def greedy_accuracy(folder: Path, config: SFTConfig) -> float:
    """Greedy accuracy of the model in `folder` on `config.eval_dataset`, through the engine:
    pass@1 of one greedy answer per problem, posed with the default instruction."""
    backend = load(folder, backend="native", device=config.device)
    greedy = SamplingParams(temperature=0, max_tokens=config.eval_max_tokens)
    problems = load_dataset(config.eval_dataset)
    return pass_at_1(backend, problems, DEFAULT_INSTRUCTION, lambda _: greedy)


def steps_for_budget(examples: list[tuple[list[int], list[int]]], config: SFTConfig) -> int:
    """Optimizer steps whose batches hold about `token_budget` tokens, at the data's mean
    sequence length."""
    mean = sum(len(ids) for ids, _ in examples) / len(examples)
    return max(1, round(config.token_budget / (mean * config.batch_size * config.grad_accum)))


def train_sft(config: SFTConfig) -> Path:
    """Train (or resume); return the final model folder."""
    if config.synth:
        config.data.parent.mkdir(parents=True, exist_ok=True)
        for spec in config.synth:
            write_sft(config.data, **spec.model_dump())
    conversations = read_conversations(config.data)
    checkpoint = config.out / "checkpoint"
    recover(checkpoint)
    if (checkpoint / "trainer_state.pt").exists():
        model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    else:
        model, tokenizer = build_model(config, conversations)
    examples = [encode_conversation(tokenizer, m, config.max_length) for m in conversations]
    if config.token_budget is not None:
        config = config.model_copy(update={"max_steps": steps_for_budget(examples, config)})
    state = resume_state(config)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def loss_of(
        model: PreTrainedModel, micro: list[tuple[list[int], list[int]]], device: torch.device
    ) -> tuple[torch.Tensor, int]:
        ids, labels, mask = collate(micro, pad_id, device)
        return model(input_ids=ids, attention_mask=mask, labels=labels).loss, int(mask.sum())

    def accuracy(model: PreTrainedModel) -> dict[str, float]:
        return {"eval_accuracy": greedy_accuracy(config.out / "checkpoint", config)}

    evaluating = config.eval_dataset is not None
    run_loop(
        config,
        model,
        tokenizer,
        examples,
        loss_of,
        state,
        "sft",
        accuracy if evaluating else None,
        config.eval_every,
        length=lambda example: len(example[0]),
    )
    final = config.out / "final"
    save(model, tokenizer, final, json_files={"training.json": config.model_dump(mode="json")})
    return final
