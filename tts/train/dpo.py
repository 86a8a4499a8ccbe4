"""`tts train dpo`: direct preference optimisation on preference pairs.

DPO (Rafailov et al., 2023, "Direct Preference Optimization: Your Language Model is Secretly a
Reward Model", eq. 7), with h the log-ratio margin of a pair,

    h = [log pi(y_w | x) - log pi_ref(y_w | x)] - [log pi(y_l | x) - log pi_ref(y_l | x)],

minimises -log sigmoid(beta * h) over pairs of a chosen y_w and a rejected y_l; IPO (Azar et al.,
2023, "A General Theoretical Paradigm to Understand Learning from Human Preferences", eq. 17)
minimises (h - 1 / (2 beta))^2, which stops pushing once the margin reaches 1 / (2 beta). The
log-probabilities are sums over each completion's tokens, as in both papers (TRL's IPO averages
them per token instead). On `tts data pairs` output (the shortest correct answer over longer or
wrong ones) this is Kimi k1.5's long2short preference optimisation (Kimi Team, 2025, Sec. 2.4).

Data: TRL's preference format, one JSON object a line with `prompt`, `chosen` and `rejected`:
conversational (a list of messages for the prompt, one assistant message for each answer,
rendered by the model's chat template) or standard (three strings, tokenised as they are).

The reference policy is the starting model. Its log-probabilities of every pair are computed
once, before the first step, and kept in OUT/reference_logprobs.json (with the data file's
hash), so training holds one model and a resumed run reads them instead of needing the start
model again. The loop is the supervised one (`tts.train.loop`): the same checkpoints, resume
and log, with `batch_size` pairs per micro-batch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from tts.data.jsonl import iter_jsonl
from tts.devices import resolve_device
from tts.errors import TTSError
from tts.train.checkpoint import recover, resume_state, save
from tts.train.logprobs import token_logprobs
from tts.train.loop import SupervisedConfig, run_loop
from tts.train.recipe import load_recipe, model_folder
from tts.train.sft import encode_conversation

# One pair, tokenised: prompt ids, chosen ids, rejected ids.
Pair = tuple[list[int], list[int], list[int]]


class DPOConfig(SupervisedConfig):
    """One DPO run. `batch_size` counts pairs per micro-batch."""

    model: str = Field("builtin", description="causal LM folder to start from, or builtin")
    data: Path = Field(description="preference pairs, TRL's format (tts data pairs writes them)")
    beta: float = Field(
        gt=0, description="strength of the pull towards the reference (no default: choose it)"
    )
    loss: Literal["sigmoid", "ipo"] = Field("sigmoid", description="DPO (sigmoid) or IPO")


def load_config(path: str | Path, **overrides: Any) -> DPOConfig:
    """A DPOConfig from a YAML recipe, with command-line overrides on top."""
    return load_recipe(DPOConfig, path, overrides)


def preference_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
    loss: Literal["sigmoid", "ipo"],
) -> torch.Tensor:
    """The mean loss of [B] pairs from their summed completion log-probabilities under the
    policy and the reference: DPO's -log sigmoid(beta h) or IPO's (h - 1/(2 beta))^2."""
    margin = (chosen - ref_chosen) - (rejected - ref_rejected)
    if loss == "ipo":
        return ((margin - 1 / (2 * beta)) ** 2).mean()
    return -F.logsigmoid(beta * margin).mean()


def encode_pair(
    tokenizer: PreTrainedTokenizerBase, record: dict[str, Any], max_length: int
) -> Pair:
    """A preference record's prompt, chosen and rejected token ids, each answer cut so that
    prompt and answer fit in `max_length`."""
    prompt = record["prompt"]
    if isinstance(prompt, str):
        prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
        answers = [
            tokenizer(record[key], add_special_tokens=False).input_ids
            for key in ("chosen", "rejected")
        ]
    else:
        answers = []
        for key in ("chosen", "rejected"):
            ids, labels = encode_conversation(tokenizer, prompt + record[key], 10**9)
            start = labels.count(-100)
            prompt_ids = ids[:start]
            answers.append(ids[start:])
    if len(prompt_ids) >= max_length:
        raise TTSError(f"a prompt of {len(prompt_ids)} tokens leaves nothing of max_length")
    room = max_length - len(prompt_ids)
    return prompt_ids, answers[0][:room], answers[1][:room]


def read_pairs(path: Path, tokenizer: PreTrainedTokenizerBase, max_length: int) -> list[Pair]:
    """Every pair of a preference file, tokenised; a malformed line is a one-line error."""
    pairs = []
    for number, record in iter_jsonl(path):
        keys = ("prompt", "chosen", "rejected")
        conversational = isinstance(record.get("prompt"), list) and all(
            isinstance(record.get(k), list) for k in keys[1:]
        )
        standard = all(isinstance(record.get(k), str) for k in keys)
        if not (conversational or standard):
            raise TTSError(
                f"{path}, line {number}: expected prompt, chosen and rejected, all strings or "
                "all lists of messages (TRL's preference format, with an explicit prompt)"
            )
        try:
            pairs.append(encode_pair(tokenizer, record, max_length))
        except (TTSError, KeyError, TypeError) as error:
            raise TTSError(f"{path}, line {number}: {error}") from None
    if not pairs:
        raise TTSError(f"{path} has no preference pairs")
    return pairs


def sequence_logprobs(
    model: torch.nn.Module, pairs: list[Pair], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """[B] summed log-probabilities of the chosen and of the rejected answers."""
    sequences = [p + c for p, c, _ in pairs] + [p + r for p, _, r in pairs]
    starts = [len(p) for p, _, _ in pairs] * 2
    logprobs, mask, _ = token_logprobs(model, sequences, starts, pad_id, 1.0)
    sums = (logprobs * mask).sum(dim=1)
    return sums[: len(pairs)], sums[len(pairs) :]


def reference_logprobs(
    config: DPOConfig, pairs: list[Pair], tokenizer: PreTrainedTokenizerBase
) -> torch.Tensor:
    """[N, 2] log-probabilities of each pair's chosen and rejected answers under the start
    model: read from OUT/reference_logprobs.json, or computed and written there."""
    path = config.out / "reference_logprobs.json"
    digest = hashlib.sha256(config.data.read_bytes()).hexdigest()
    if path.exists():
        cached = json.loads(path.read_text())
        if cached["data_sha256"] != digest or cached["model"] != config.model:
            raise TTSError(
                f"{path} holds the reference of another data file or model; use another out"
            )
        return torch.tensor(cached["logprobs"], dtype=torch.float64)
    model = AutoModelForCausalLM.from_pretrained(model_folder(config.model), dtype=torch.float32)
    model.to(resolve_device(config.device)).eval()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    rows = []
    with torch.no_grad():
        for i in range(0, len(pairs), config.batch_size):
            chosen, rejected = sequence_logprobs(model, pairs[i : i + config.batch_size], pad_id)
            rows += torch.stack([chosen, rejected], dim=1).tolist()
    config.out.mkdir(parents=True, exist_ok=True)
    record = {"data_sha256": digest, "model": config.model, "logprobs": rows}
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(record))
    partial.replace(path)
    return torch.tensor(rows, dtype=torch.float64)


def train_dpo(config: DPOConfig) -> Path:
    """Train (or resume); return the final model folder."""
    checkpoint = config.out / "checkpoint"
    recover(checkpoint)
    start = checkpoint if (checkpoint / "trainer_state.pt").exists() else model_folder(config.model)
    tokenizer = AutoTokenizer.from_pretrained(start)
    pairs = read_pairs(config.data, tokenizer, config.max_length)
    reference = reference_logprobs(config, pairs, tokenizer)
    model = AutoModelForCausalLM.from_pretrained(start, dtype=torch.float32)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    examples = list(range(len(pairs)))

    def loss_of(
        model: torch.nn.Module, micro: list[int], device: torch.device
    ) -> tuple[torch.Tensor, int]:
        chosen, rejected = sequence_logprobs(model, [pairs[i] for i in micro], pad_id)
        ref = reference[micro].to(device=device, dtype=chosen.dtype)
        loss = preference_loss(chosen, rejected, ref[:, 0], ref[:, 1], config.beta, config.loss)
        tokens = sum(len(pairs[i][1]) + len(pairs[i][2]) for i in micro)
        return loss, tokens

    run_loop(config, model, tokenizer, examples, loss_of, resume_state(config), "dpo")
    final = config.out / "final"
    save(model, tokenizer, final, json_files={"training.json": config.model_dump(mode="json")})
    return final
