"""The PRM trainer's data: stepwise-label records read and checked, held out by problem,
encoded as the scorer encodes them at search time, and collated into padded batches.

One example is (token ids, the positions that end each step, the target at each (P(good)), the
solution's first token (where an implicit PRM's sum starts)).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from tts.data.jsonl import iter_jsonl
from tts.errors import TTSError
from tts.verifiers.prm.token import encode_policy_text, encode_stepwise

Example = tuple[list[int], list[int], list[float], int]


def read_stepwise(path: Path, targets: str) -> list[tuple[str, str, list[str], list[float | None]]]:
    """(problem key, prompt, steps, targets) per record, None for a step left unlabelled (outcome
    labels label the last step only); a malformed line is a one-line error."""
    rows = []
    for number, row in iter_jsonl(path):
        prompt, steps, labels = row.get("prompt"), row.get("completions"), row.get("labels")
        scores = row.get("scores") if targets == "soft" else labels
        if targets == "soft" and "scores" not in row:
            raise TTSError(
                f"{path}, line {number}: no soft scores (binary estimation writes none); "
                "train with --targets hard"
            )
        if (
            not isinstance(prompt, str)
            or not isinstance(steps, list)
            or not steps
            or not all(isinstance(step, str) for step in steps)
            or not isinstance(scores, list)
            or len(scores) != len(steps)
        ):
            wanted = "scores" if targets == "soft" else "labels"
            raise TTSError(
                f"{path}, line {number}: expected prompt, completions [step, ...] and one "
                f"{wanted} entry per step"
            )
        if not all(s is None or isinstance(s, (bool, int, float)) for s in scores) or all(
            s is None for s in scores
        ):
            raise TTSError(
                f"{path}, line {number}: each label is a number, true/false, or null for a step "
                "left unlabelled, and at least one is not null"
            )
        key = (row.get("meta") or {}).get("problem_id", prompt)
        rows.append((key, prompt, steps, [None if s is None else float(s) for s in scores]))
    if not rows:
        raise TTSError(f"{path} has no labelled solutions")
    return rows


def held_out(key: str, share: float) -> bool:
    """Whether problem `key` is in the held-out `share`: by a hash of the key, so every
    solution of one problem falls on the same side, run after run."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < share * 2**64


def encode(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    steps: list[str],
    targets: list[float | None],
    step_separator: str,
    max_length: int,
    prompt_template: str | None,
) -> Example:
    """One example, cut to `max_length` (steps that end beyond it lose their target; unlabelled
    steps have none): TRL's piecewise input, or with a `prompt_template` the policy's own text."""
    start = 0
    if prompt_template is None:
        ids, positions = encode_stepwise(tokenizer, prompt, steps, step_separator)
    else:
        ids, positions, start = encode_policy_text(
            tokenizer, prompt, steps, step_separator, prompt_template
        )
    kept = [(p, t) for p, t in zip(positions, targets) if p < max_length and t is not None]
    return ids[:max_length], [p for p, _ in kept], [t for _, t in kept], start


def collate(batch: list[Example], pad_id: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Padded ids and mask, (row, column, target) of every labelled position, and each row's
    solution start."""
    width = max(len(ids) for ids, _, _, _ in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    rows, cols, targets = [], [], []
    for row, (seq, positions, values, _) in enumerate(batch):
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
        rows += [row] * len(positions)
        cols += positions
        targets += values
    starts = torch.tensor([start for _, _, _, start in batch])
    tensors = (ids, mask, torch.tensor(rows), torch.tensor(cols), torch.tensor(targets), starts)
    return tuple(t.to(device) for t in tensors)
