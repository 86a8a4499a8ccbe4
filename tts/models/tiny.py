"""A tiny random-weight model, built offline, saved as an ordinary Hugging Face folder.

Tests and demos need a real model folder (config, safetensors, tokenizer with a chat template)
without downloading one; the weights are random, so the text is gibberish, but every code path
is the one a real Llama, Qwen2 or Qwen3 model takes.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import (
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen3Config,
)
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

# ChatML, as Qwen models use it. Llama-family tokenizers start with a BOS token, and so does
# their template: the engine must then not add a second one. The generation markers render
# nothing; they mark what the assistant writes, its end-of-turn token included, for
# `return_assistant_tokens_mask` (TRL's `assistant_only_loss`).
CHAT_TEMPLATE = (
    "{{ bos_token if bos_token else '' }}"
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] }}<|im_end|>\n{% endgeneration %}"
    "{% else %}{{ message['content'] }}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

CORPUS = [
    "Solve the problem step by step, and put your final answer within \\boxed{}.",
    "<think>Let me compute 12 + 30 = 42. Wait, check it again: 12 + 30 = 42.</think>",
    "The answer is \\boxed{42}.",
    "First, 7 * 8 = 56.\n\nThen 56 - 14 = 42.\n\nThe answer is \\boxed{42}.",
    "What is the value of $x$ if $2x + 3 = 11$? Subtract 3: $2x = 8$, so $x = \\frac{8}{2} = 4$.",
    "#### 72",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many in May.",
    "0 1 2 3 4 5 6 7 8 9 10 100 1000 + - * / = ( ) [ ] { } ^ _ \\sqrt \\pi \\frac \\cdot",
]
CONFIG_CLASSES = {"llama": LlamaConfig, "qwen2": Qwen2Config, "qwen3": Qwen3Config}
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]


def build_tokenizer(
    vocab_size: int = 512, bos: bool = True, corpus: Iterable[str] | None = None
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with a ChatML template, trained on `corpus` (by default a few
    lines of math text).

    bos: whether encoding adds a BOS token (Llama style) or not (Qwen style).
    """
    tokenizer = Tokenizer(models.BPE())
    # Qwen2's own normaliser and pre-tokeniser: transformers rebuilds exactly these when it loads
    # a Qwen2 folder, so the tokenizer trained here is the one every loader gets back. Digits
    # are split one by one, which is also what arithmetic wants.
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS * 4 if corpus is None else corpus, trainer=trainer)
    bos_token = "<|endoftext|>" if bos else None
    if bos:
        bos_id = tokenizer.token_to_id(bos_token)
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos_token} $A", special_tokens=[(bos_token, bos_id)]
        )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=bos_token,
        eos_token="<|im_end|>",
        pad_token="<pad>",
    )
    fast.add_tokens(["<think>", "</think>"])
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(
    out: str | Path,
    family: str = "llama",
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    seed: int = 0,
    intermediate_size: int | None = None,
    vocab_size: int | None = None,
) -> Path:
    """Write a random-weight `family` ("llama", "qwen2" or "qwen3") model folder to `out`.

    Like the real small Qwen3 models, "qwen3" sets head_dim apart from hidden_size / num_heads
    (twice it here), so that code path is exercised too. intermediate_size defaults to twice
    the hidden size and vocab_size to the tokenizer's; a larger vocab_size gives a real model's
    LM-head cost (benchmarks), with ids past the tokenizer's decoding to nothing.
    """
    if family not in CONFIG_CLASSES:
        raise ValueError(f"family must be one of {sorted(CONFIG_CLASSES)}, got {family!r}")
    tokenizer = build_tokenizer(bos=family == "llama")
    extra = {"head_dim": 2 * hidden_size // num_heads} if family == "qwen3" else {}
    config = CONFIG_CLASSES[family](
        vocab_size=vocab_size or len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=family != "llama",
        **extra,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    out = Path(out)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
