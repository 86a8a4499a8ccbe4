"""Process reward model training on stepwise labels, in the format `tts.verifiers` loads.

Data (`tts.train.prm_data`): TRL's stepwise-supervision JSON Lines, as `tts data shepherd`
writes it: `{"prompt", "completions": [step, ...], "labels": [bool, ...], "scores": [float,
...]}` (scores optional).
Model: a two-label token-classification head on a causal backbone (`AutoModelForTokenClassification`
over a causal LM folder keeps the backbone and adds a new `score` head); the built-in model's
backbone by default. Input: exactly what the scorer builds at search time,
`tts.verifiers.prm.token.encode_stepwise` (TRL's `PRMTrainer.tokenize_row`: the problem, then each
step followed by `step_separator`), so train and test never disagree on where a step ends. With
`input: policy` it is the policy's own text instead (`encode_policy_text`: the problem in the
backbone's chat template with the default instruction, as strategies prompt, and one
tokenization of the whole), which keeps a backbone that is the policy in its own distribution;
the template goes into `prm_config.json`, so the scorer builds the same input.

Loss: only at the token that ends each step. Hard targets: cross-entropy against the label;
soft targets: cross-entropy against (1 - s, s), s the step's Math-Shepherd soft estimate (Wang
et al., 2024, Sec. 3.3, eq. 5; the paper trains on hard labels, soft ones are its ablation).

`objective: implicit` trains an implicit PRM instead (`tts.verifiers.prm.implicit`; Yuan et al.,
2024): no head, the backbone stays a causal LM, and P(good) after a step is sigmoid(beta * the
log-likelihood ratio of the solution so far against the untouched starting model; with
`value: min`, of its worst step so far), with the same loss at the same positions. The paper
trains on outcome labels alone and finds step labels add little; here the steps' labels are
what `tts data shepherd` gives, so they are used.

Held out: `eval_share` of the problems (by `meta.problem_id`, else the prompt), never of the
records, so steps of one problem never sit on both sides. Every `eval_every` steps and at the end
the log gets (`tts.train.prm_metrics`) the step-level AUROC (P(good) against the hard labels)
and accuracy at 0.5, and the sibling accuracy: of two held-out solutions of one problem that
share every step before one where one is good and the other bad, how often the good step scores
higher. Pooled AUROC also
rewards knowing which problems and which positions go wrong; the sibling pairs ask only
whether the model spots the slip, the decision that steers a beam search.
`OUT/final/` is a Hugging Face folder with `prm_config.json`, which `--prm OUT/final` loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
import transformers
from pydantic import Field, model_validator
from torch.nn.functional import binary_cross_entropy_with_logits
from transformers import (
    AutoModelForCausalLM,
    AutoModelForTokenClassification,
    AutoTokenizer,
    PreTrainedModel,
)

from tts.devices import resolve_device
from tts.errors import TTSError
from tts.prompts import build_prompt
from tts.train.checkpoint import resume_state, save
from tts.train.loop import SupervisedConfig, run_loop
from tts.train.prm_data import Example, collate, encode, held_out, read_stepwise
from tts.train.prm_metrics import LogOdds, sibling_pairs, step_metrics
from tts.train.recipe import load_recipe, model_folder
from tts.verifiers.prm.implicit import Value, step_values, token_log_ratios
from tts.verifiers.prm.load import PRM_CONFIG
from tts.verifiers.prm.token import PROBLEM


class PRMConfig(SupervisedConfig):
    """One PRM run (the loop's settings are `SupervisedConfig`'s)."""

    data: Path = Field(description="stepwise-label JSON Lines (tts data shepherd)")
    model: str = Field(
        "builtin",
        description="causal LM folder: the backbone a head goes on, or the implicit PRM's start "
        "and reference",
    )
    targets: Literal["hard", "soft"] = Field("hard", description="train on labels or scores")
    step_separator: str = Field("\n\n", min_length=1, description="text after each step")
    input: Literal["trl", "policy"] = Field(
        "trl", description="TRL's piecewise input, or the policy's own prompt and tokens"
    )
    objective: Literal["classification", "implicit"] = Field(
        "classification", description="a step head, or an implicit PRM (likelihood ratio)"
    )
    beta: float = Field(0.5, gt=0, description="implicit PRM: P(good) = sigmoid(beta * value)")
    value: Value = Field(
        "sum",
        description="implicit PRM: the solution's log-ratio so far (sum) or its worst step's (min)",
    )
    eval_share: float = Field(0.1, ge=0, lt=1, description="problems held out for eval")
    eval_every: int = Field(200, ge=1, description="steps between evaluations")

    @model_validator(mode="after")
    def _implicit_reads_the_policy(self) -> PRMConfig:
        if self.objective == "implicit" and self.input != "policy":
            raise ValueError("objective: implicit scores the policy's own text; set input: policy")
        return self


def load_config(path: str | Path, **overrides: object) -> PRMConfig:
    """A PRMConfig from a YAML recipe, with command-line overrides on top."""
    return load_recipe(PRMConfig, path, overrides)


def head_log_odds(
    model: torch.nn.Module,
    ids: torch.Tensor,
    mask: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    starts: torch.Tensor,
) -> torch.Tensor:
    """A two-label head's log-odds (its softmax's label 1 is the sigmoid of this)."""
    logits = model(input_ids=ids, attention_mask=mask).logits[rows, cols].float()
    return logits[:, 1] - logits[:, 0]


def implicit_log_odds(reference: torch.nn.Module, beta: float, value: Value) -> LogOdds:
    """An implicit PRM's log-odds: beta times the value of its log-ratios against `reference`."""

    def log_odds(
        model: torch.nn.Module,
        ids: torch.Tensor,
        mask: torch.Tensor,
        rows: torch.Tensor,
        cols: torch.Tensor,
        starts: torch.Tensor,
    ) -> torch.Tensor:
        ratios = token_log_ratios(model, reference, ids, mask)
        return beta * step_values(ratios, rows, cols, starts, value)

    return log_odds


def load_model(config: PRMConfig, state: dict[str, Any] | None) -> tuple[PreTrainedModel, Path]:
    """The model to train (a head on the backbone, or the causal LM itself) and its folder."""
    implicit = config.objective == "implicit"
    if state is not None:
        source = config.out / "checkpoint"
        kind = AutoModelForCausalLM if implicit else AutoModelForTokenClassification
        return kind.from_pretrained(source, dtype=torch.float32), source
    source = model_folder(config.model)
    if implicit:
        return AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32), source
    torch.manual_seed(config.seed)  # the new head's initialisation
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the head is new on purpose: no report
    try:
        model = AutoModelForTokenClassification.from_pretrained(
            source, num_labels=2, dtype=torch.float32
        )
    finally:
        transformers.logging.set_verbosity(verbosity)
    return model, source


def train_prm(config: PRMConfig) -> dict[str, object]:
    """Train (or resume); return the final folder, the class balance and the last metrics."""
    rows = read_stepwise(config.data, config.targets)
    state = resume_state(config)
    model, source = load_model(config, state)
    tokenizer = AutoTokenizer.from_pretrained(source)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    model.config.pad_token_id = pad_id
    log_odds: LogOdds = head_log_odds
    if config.objective == "implicit":
        # The reference is the starting model, frozen, on a resume too.
        reference = AutoModelForCausalLM.from_pretrained(
            model_folder(config.model), dtype=torch.float32
        )
        reference = reference.to(resolve_device(config.device)).eval().requires_grad_(False)
        log_odds = implicit_log_odds(reference, config.beta, config.value)
    template = build_prompt(tokenizer, PROBLEM) if config.input == "policy" else None
    train, evaluation, eval_rows = [], [], []
    for key, prompt, steps, targets in rows:
        example = encode(
            tokenizer, prompt, steps, targets, config.step_separator, config.max_length, template
        )
        if not held_out(key, config.eval_share):
            train.append(example)
        elif example[1]:
            # Eval always scores against hard labels: a step is good when its target is above 0.
            ids, positions, kept, start = example
            hard = [float(t > 0) for t in kept]
            evaluation.append((ids, positions, hard, start))
            # Sibling pairs compare steps by index: only solutions labelled at every step.
            eval_rows.append((key, steps, hard if len(hard) == len(steps) else []))
    train = [example for example in train if example[1]]
    if not train:
        raise TTSError(f"{config.data}: no labelled steps left to train on")
    pairs = sibling_pairs(eval_rows)
    targets = [t for _, _, ts, _ in train for t in ts]
    balance = {
        "train_solutions": len(train),
        "train_steps": len(targets),
        "train_good_share": sum(t > 0 for t in targets) / len(targets),
        "eval_solutions": len(evaluation),
        "eval_steps": sum(len(p) for _, p, _, _ in evaluation),
    }

    def loss_of(
        model: torch.nn.Module, micro: list[Example], device: torch.device
    ) -> tuple[torch.Tensor, int]:
        ids, mask, rows, cols, targets, starts = collate(micro, pad_id, device)
        if config.targets == "hard":
            targets = (targets > 0.5).float()
        # Cross-entropy over two labels is this on their log-odds; soft targets are P(good).
        found = log_odds(model, ids, mask, rows, cols, starts)
        return binary_cross_entropy_with_logits(found, targets), int(mask.sum())

    def metrics(model: torch.nn.Module) -> dict[str, float]:
        return step_metrics(model, log_odds, evaluation, pairs, pad_id, config.batch_size)

    run_loop(
        config,
        model,
        tokenizer,
        train,
        loss_of,
        state,
        "prm",
        metrics if evaluation else None,
        config.eval_every,
    )
    model.eval()
    result = balance | (metrics(model) if evaluation else {})
    final = config.out / "final"
    files = {
        PRM_CONFIG: prm_settings(config, template),
        "training.json": config.model_dump(mode="json"),
        "eval.json": result,
    }
    save(model, tokenizer, final, json_files=files)
    return {"final": str(final), **result}


def prm_settings(config: PRMConfig, template: str | None) -> dict[str, object]:
    """What `prm_config.json` tells `tts.verifiers.load_scorer` about the trained folder."""
    if config.objective == "implicit":
        # "builtin" stays a name: the shipped built-in PRM finds the shipped model wherever
        # the package is installed.
        model = config.model
        reference = model if model == "builtin" else str(model_folder(model).resolve())
        return {
            "format": "implicit_prm",
            "step_separator": config.step_separator,
            "prompt_template": template,
            "reference": reference,
            "beta": config.beta,
            "value": config.value,
        }
    settings = {"format": "token_classification", "step_separator": config.step_separator}
    if template is not None:
        settings["prompt_template"] = template
    return settings
