"""Supervised fine-tuning on chat data: one readable loop, nanoGPT style.

Data is the SFT format of DESIGN.md (`{"messages": [...], "meta": {...}}` per line). Each
conversation is rendered with the model's chat template and the loss falls on the last
(assistant) message's tokens only, its end-of-turn token included, so the model learns to stop.
Batches are padded; AdamW with linear warmup then cosine decay; gradient accumulation.

With `eval_dataset` set, every `eval_every` steps the checkpoint is scored greedily through the
native engine (the accuracy goes to the log). Every `save_every` steps the loop writes
`OUT/checkpoint/`: a Hugging Face folder (safetensors, tokenizer) plus `trainer_state.pt`
(optimizer, step, RNG state, config), replaced atomically.
Running the same command again resumes from it, and because the data order is a function of
(seed, epoch) and the RNG state is restored, the resumed run ends where an uninterrupted one does.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import orjson
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from tts.data.jsonl import RecordWriter, iter_jsonl, read_records
from tts.devices import resolve_device, resolve_dtype
from tts.engine.tiny import CONFIG_CLASSES, build_tokenizer
from tts.errors import TTSError, invalid_options


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
    style: Literal["short", "long"] = Field("short", description="trace style")
    error_rate: float = Field(0.3, ge=0, le=1, description="long style: slips per step")
    seed: int = Field(0, description="problem seed")


class SFTConfig(BaseModel):
    """One SFT run. Units: steps are optimizer steps; batch_size counts sequences."""

    model_config = ConfigDict(extra="forbid")

    data: Path = Field(description="SFT JSON Lines file")
    synth: list[SynthData] = Field([], description="synthetic problems appended to data first")
    out: Path = Field(description="output folder: checkpoint/, final/, log.jsonl")
    model: Path | None = Field(None, description="Hugging Face folder to fine-tune")
    init: ModelInit | None = Field(None, description="or: a new model from these sizes")
    max_steps: int = Field(1000, ge=1, description="optimizer steps")
    batch_size: int = Field(16, ge=1, description="sequences per micro-batch")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    max_length: int = Field(512, ge=8, description="longer conversations are cut to this")
    lr: float = Field(1e-3, gt=0, description="peak learning rate")
    min_lr: float = Field(1e-4, ge=0, description="learning rate at the end of the cosine")
    warmup_steps: int = Field(50, ge=0, description="linear warmup steps")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay")
    grad_clip: float = Field(1.0, gt=0, description="max gradient norm")
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="training precision")
    device: str | None = Field(None, description="torch device; default cuda if present")
    save_every: int = Field(100, ge=1, description="steps between checkpoints")
    eval_dataset: str | None = Field(
        None, description="scored greedily every eval_every steps, e.g. synth:arith:3:100"
    )
    eval_every: int = Field(500, ge=1, description="steps between evaluations")
    eval_max_tokens: int = Field(256, ge=1, description="most tokens per eval answer")
    log_every: int = Field(10, ge=1, description="steps between log lines")
    seed: int = Field(0, description="data order, initialisation and dropout")

    @model_validator(mode="after")
    def _one_start(self) -> SFTConfig:
        if (self.model is None) == (self.init is None):
            raise ValueError("give exactly one of model (a folder) and init (a new model)")
        return self


def read_yaml(path: str | Path) -> dict[str, Any]:
    try:
        values = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as error:
        raise TTSError(f"cannot read {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise TTSError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(values, dict):
        raise TTSError(f"{path} should hold a mapping of settings")
    return values


def load_config(path: str | Path, **overrides: Any) -> SFTConfig:
    """An SFTConfig from a YAML recipe, with command-line overrides on top (a given `model` or
    `init` replaces the recipe's choice of starting point)."""
    values = read_yaml(path)
    given = {k: v for k, v in overrides.items() if v is not None}
    if "model" in given or "init" in given:
        values = {k: v for k, v in values.items() if k not in ("model", "init")}
    try:
        return SFTConfig(**(values | given))
    except ValidationError as error:
        raise invalid_options(f"SFT config {path}", error) from None


def lr_at(step: int, config: SFTConfig) -> float:
    """Linear warmup to lr, then cosine decay to min_lr at max_steps."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(config.max_steps - config.warmup_steps, 1)
    return config.min_lr + 0.5 * (config.lr - config.min_lr) * (1 + math.cos(math.pi * progress))


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


def build_model(config: SFTConfig, conversations: list[list[dict[str, str]]]):
    """The model and tokenizer to train: loaded from a folder, or new from `init`."""
    if config.model is not None:
        if not (config.model / "tokenizer_config.json").exists():
            raise TTSError(f"{config.model} has no tokenizer (tokenizer_config.json)")
        tokenizer = AutoTokenizer.from_pretrained(config.model)
        return AutoModelForCausalLM.from_pretrained(config.model, dtype=torch.float32), tokenizer
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


def batches(examples: list[tuple[list[int], list[int]]], config: SFTConfig, step: int):
    """The micro-batch examples of optimizer step `step`: epoch order from (seed, epoch)."""
    per_step = config.batch_size * config.grad_accum
    start = step * per_step
    epoch, offset = divmod(start, len(examples))
    order = list(range(len(examples)))
    random.Random(config.seed * 100_003 + epoch).shuffle(order)
    picked = []
    while len(picked) < per_step:
        if offset == len(order):
            epoch, offset = epoch + 1, 0
            random.Random(config.seed * 100_003 + epoch).shuffle(order)
        picked.append(examples[order[offset]])
        offset += 1
    return [picked[i : i + config.batch_size] for i in range(0, per_step, config.batch_size)]


def collate(batch: list[tuple[list[int], list[int]]], pad_id: int, device: torch.device):
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


def save(model, tokenizer, folder: Path, state: dict[str, Any] | None = None) -> None:
    """Write a Hugging Face folder (plus trainer state) atomically: a kill never leaves half."""
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    if state is not None:
        torch.save(state, partial / "trainer_state.pt")
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)


def evaluate(folder: Path, config: SFTConfig) -> float:
    """Greedy accuracy of the model in `folder` on `config.eval_dataset`, through the engine."""
    from tts.data.datasets import load_dataset
    from tts.engine import load
    from tts.search import make_strategy
    from tts.verifiers import math_equal

    problems = load_dataset(config.eval_dataset)
    backend = load(folder, backend="native", device=config.device)
    greedy = make_strategy("majority", n=1, temperature=0, max_tokens=config.eval_max_tokens)

    async def solve_all():
        return await asyncio.gather(*(greedy.solve(p.problem, backend) for p in problems))

    results = asyncio.run(solve_all())
    right = sum(
        r.answer is not None and math_equal(r.answer, p.answer) for r, p in zip(results, problems)
    )
    return right / len(problems)


def train_sft(config: SFTConfig) -> Path:
    """Train (or resume); return the final model folder."""
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    if config.synth:
        from tts.data.synthetic import write_sft

        config.data.parent.mkdir(parents=True, exist_ok=True)
        for spec in config.synth:
            write_sft(config.data, **spec.model_dump())
    conversations = read_conversations(config.data)
    checkpoint = config.out / "checkpoint"
    resumed = (checkpoint / "trainer_state.pt").exists()
    if resumed:
        state = torch.load(checkpoint / "trainer_state.pt", weights_only=True)
        if state["config"] != config.model_dump(mode="json"):
            raise TTSError(f"{checkpoint} was made with another config; use another --out")
        model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    else:
        model, tokenizer = build_model(config, conversations)
    model.to(device).train()
    examples = [encode_conversation(tokenizer, m, config.max_length) for m in conversations]
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.lr,
        betas=(0.9, 0.95),
    )
    step = 0
    if resumed:
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        step = state["step"]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    config.out.mkdir(parents=True, exist_ok=True)
    log_path = config.out / "log.jsonl"
    # Lines logged after the checkpoint we resume from will be logged again: drop them.
    kept = [r for r in read_records(log_path) if r["step"] <= step]
    log_path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in kept))
    log = RecordWriter(log_path)
    bar = tqdm(total=config.max_steps, initial=step, desc="sft", unit="step")
    tokens, started = 0, time.perf_counter()
    while step < config.max_steps:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, config)
        total = 0.0
        for micro in batches(examples, config, step):
            ids, labels, mask = collate(micro, pad_id, device)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            (loss / config.grad_accum).backward()
            total += loss.item() / config.grad_accum
            tokens += int(mask.sum())
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        bar.update()
        bar.set_postfix(loss=f"{total:.3f}")
        if step % config.log_every == 0 or step == config.max_steps:
            rate = tokens / (time.perf_counter() - started)
            log.write(
                {
                    "step": step,
                    "loss": total,
                    "lr": lr_at(step - 1, config),
                    "grad_norm": float(norm),
                    "tokens_per_s": rate,
                }
            )
        evaluate_now = config.eval_dataset is not None and step % config.eval_every == 0
        if step % config.save_every == 0 or step == config.max_steps or evaluate_now:
            state = {
                "optimizer": optimizer.state_dict(),
                "step": step,
                "rng": torch.get_rng_state(),
                "config": config.model_dump(mode="json"),
            }
            save(model, tokenizer, checkpoint, state)
        if evaluate_now:
            log.write({"step": step, "eval_accuracy": evaluate(checkpoint, config)})
    bar.close()
    log.close()
    final = config.out / "final"
    save(model, tokenizer, final)
    (final / "training.json").write_text(json.dumps(config.model_dump(mode="json"), indent=2))
    return final
