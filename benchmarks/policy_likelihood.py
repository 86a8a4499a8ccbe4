"""How well does the policy's own likelihood judge its steps, on TRL's input and on its own text?

    python benchmarks/policy_likelihood.py [--model builtin]
        [--labels runs/builtin-prm/labels.jsonl]

No training: a step's score is the lowest log-probability the policy gives any token of it, and
a solution so far is as good as its worst step (the running minimum). Scored on the held-out
problems of `tts train prm` (the same `eval_share` split) with the same measures: step AUROC
against the labels and sibling accuracy (two solutions of one problem that part at a step, one
good and one bad). Two inputs: TRL's (`encode_stepwise`: the problem alone, every step
tokenized on its own) and the policy's text (`encode_policy_text`: its chat template, one
tokenization), which is what the policy saw when it wrote the steps. The gap between them is
why `tts train prm --input policy` exists. Prints the figures and writes
benchmarks/results/policy_likelihood.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tts.models.builtin import resolve_model
from tts.prompts import build_prompt
from tts.train.prm_data import held_out, read_stepwise
from tts.train.prm_metrics import auroc, sibling_pairs
from tts.verifiers.prm.token import PROBLEM, encode_policy_text, encode_stepwise

SEPARATOR = "\n\n"


@torch.no_grad()
def step_minima(model, ids: list[int], positions: list[int], start: int) -> list[float]:
    """The lowest token log-probability inside each step (its tokens after the previous end)."""
    inputs = torch.tensor([ids])
    log_probs = model(input_ids=inputs).logits[0, :-1].float().log_softmax(dim=-1)
    chosen = log_probs.gather(-1, inputs[0, 1:, None])[:, 0]  # chosen[t - 1]: token t
    bounds = [start, *(p + 1 for p in positions)]
    return [float(chosen[a - 1 : b - 1].min()) for a, b in zip(bounds, bounds[1:])]


def judge(model, rows, encode) -> dict[str, float]:
    scores = []
    for _, prompt, steps, _ in rows:
        ids, positions, start = encode(prompt, steps)
        scores.append(np.minimum.accumulate(step_minima(model, ids, positions, start)))
    labels = np.array([t > 0 for *_, targets in rows for t in targets])
    pairs = sibling_pairs([(key, steps, targets) for key, _, steps, targets in rows])
    margins = np.array([scores[g][i] - scores[b][i] for g, b, i in pairs])
    return {
        "step_auroc": auroc(labels, np.concatenate(scores)),
        "sibling_accuracy": float((margins > 0).mean() + (margins == 0).mean() / 2),
        "sibling_pairs": len(pairs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="builtin")
    parser.add_argument("--labels", type=Path, default=Path("runs/builtin-prm/labels.jsonl"))
    parser.add_argument("--eval-share", type=float, default=0.1)
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/policy_likelihood.json")
    )
    args = parser.parse_args()
    folder = resolve_model(args.model)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    rows = [r for r in read_stepwise(args.labels, "hard") if held_out(r[0], args.eval_share)]
    template = build_prompt(tokenizer, PROBLEM)

    def trl(prompt: str, steps: list[str]) -> tuple[list[int], list[int], int]:
        prompt_length = len(encode_stepwise(tokenizer, prompt, [], SEPARATOR)[0])
        return *encode_stepwise(tokenizer, prompt, steps, SEPARATOR), prompt_length

    inputs = {
        "trl": trl,
        "policy": lambda p, s: encode_policy_text(tokenizer, p, s, SEPARATOR, template),
    }
    result = {"model": args.model, "labels": str(args.labels), "solutions": len(rows)}
    for name, encode in inputs.items():
        result[name] = judge(model, rows, encode)
        print(name, json.dumps(result[name]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
