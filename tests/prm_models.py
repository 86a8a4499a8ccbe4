"""Tiny random-weight PRM folders of each format `tts.verifiers.load_scorer` reads, built offline.

The heads get larger weights than transformers' init (std 0.02), so that scores spread over
(0, 1) instead of all sitting near 0.5, and a wrong position or label index shows.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, LlamaForTokenClassification, Qwen2Config

from tts.models.tiny import build_tokenizer
from tts.verifiers.prm.qwen import STEP_SEPARATOR, Qwen2ForProcessRewardModel
from tts.verifiers.prm.shepherd import STEP_TAG

HEAD_STD = 0.3
MAX_POSITIONS = 512  # small, so the test of an over-long input stays cheap
SIZES = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=MAX_POSITIONS,
)


def _spread(linear: torch.nn.Linear, std: float = HEAD_STD) -> None:
    with torch.no_grad():
        linear.weight.normal_(0, std)


# A policy's prompt with literal braces around the problem's place, as \boxed{} instructions have.
POLICY_PROMPT = "User: {problem}\nPut the answer in \\boxed{}.\nAssistant:"


def build_token_prm(
    out: str | Path,
    step_separator: str = "\n\n",
    seed: int = 0,
    prompt_template: str | None = None,
) -> Path:
    """A TRL-format `LlamaForTokenClassification` (two labels, BOS-adding tokenizer), with a
    `prm_config.json` naming a separator other than TRL's default, so that reading it shows,
    and a prompt template when given (the policy's-text input)."""
    tokenizer = build_tokenizer(bos=True)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        num_labels=2,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **SIZES,
    )
    torch.manual_seed(seed)
    model = LlamaForTokenClassification(config)
    _spread(model.score)
    out = Path(out)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    settings = {"step_separator": step_separator}
    if prompt_template is not None:
        settings["prompt_template"] = prompt_template
    (out / "prm_config.json").write_text(json.dumps(settings))
    return out


def build_shepherd_prm(out: str | Path, seed: int = 0) -> Path:
    """A Math-Shepherd-style `LlamaForCausalLM` whose tokenizer has "ки" added as a token."""
    tokenizer = build_tokenizer(bos=True)
    tokenizer.add_tokens([STEP_TAG])
    return _causal_lm(Path(out), seed, tokenizer)


def _causal_lm(out: Path, seed: int, tokenizer=None) -> Path:
    tokenizer = tokenizer or build_tokenizer(bos=True)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **SIZES,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    _spread(model.lm_head)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def build_implicit_prm(out: str | Path, beta: float = 0.5, seed: int = 0) -> Path:
    """An implicit PRM: a `LlamaForCausalLM` and, in `reference/` inside it (named relative to
    the folder, as a moved folder needs), another one with other weights."""
    out = Path(out)
    _causal_lm(out, seed)
    _causal_lm(out / "reference", seed + 1)
    settings = {
        "format": "implicit_prm",
        "step_separator": "\n\n",
        "prompt_template": POLICY_PROMPT,
        "reference": "reference",
        "beta": beta,
    }
    (out / "prm_config.json").write_text(json.dumps(settings))
    return out


def build_qwen_prm(out: str | Path, seed: int = 0) -> Path:
    """A Qwen2.5-Math-PRM-style folder: `Qwen2ForProcessRewardModel` weights, a Qwen-style
    tokenizer (no BOS) with the "<extra_0>" special token, and the real checkpoint's `auto_map`
    in config.json, which must not make loading reach for remote code."""
    tokenizer = build_tokenizer(bos=False)
    tokenizer.add_tokens([STEP_SEPARATOR], special_tokens=True)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
        **SIZES,
    )
    torch.manual_seed(seed)
    model = Qwen2ForProcessRewardModel(config)
    _spread(model.score[0])
    _spread(model.score[2], std=HEAD_STD / 3)  # after the ReLU's all-positive input: no saturation
    out = Path(out)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    config_file = out / "config.json"
    saved = json.loads(config_file.read_text())
    saved["auto_map"] = {
        "AutoConfig": "configuration_qwen2_rm.Qwen2RMConfig",
        "AutoModel": "modeling_qwen2_rm.Qwen2ForProcessRewardModel",
    }
    config_file.write_text(json.dumps(saved, indent=2))
    return out
