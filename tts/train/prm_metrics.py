"""How well a PRM in training judges held-out steps: step-level AUROC and accuracy of P(good)
against the hard labels, and the sibling accuracy (of two solutions of one problem that part at
a step, one good there and one bad, how often the good one scores higher: the choice a beam
search makes)."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable

import numpy as np
import torch

from tts.train.prm_data import Example, collate

# log(P(good) / P(bad)) at every labelled position of a collated batch: (model, ids, mask, rows,
# cols, starts) -> [positions] tensor.
LogOdds = Callable[
    [torch.nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    torch.Tensor,
]


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve, as the Mann-Whitney U statistic over average ranks (ties
    count half); NaN when one class is missing. Hand-written: scikit-learn for one function
    would be a heavy dependency."""
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if not positives or not negatives:
        return float("nan")
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2
    ranks = average_rank[inverse]
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def sibling_pairs(rows: list[tuple[str, list[str], list[float]]]) -> list[tuple[int, int, int]]:
    """(good, bad, step) for every two solutions of one problem, given as (problem key, steps,
    targets), that agree on every step before `step` and differ there, one good and one bad:
    the choice a beam search makes between two continuations of one prefix."""
    by_problem: dict[str, list[int]] = defaultdict(list)
    for index, (key, _, _) in enumerate(rows):
        by_problem[key].append(index)
    pairs = []
    for indices in by_problem.values():
        for a, b in itertools.combinations(indices, 2):
            (_, steps_a, labels_a), (_, steps_b, labels_b) = rows[a], rows[b]
            step = next(
                (i for i, (x, y) in enumerate(zip(steps_a, steps_b)) if x != y),
                min(len(steps_a), len(steps_b)),
            )
            if step < min(len(labels_a), len(labels_b)) and labels_a[step] != labels_b[step]:
                pairs.append((a, b, step) if labels_a[step] > labels_b[step] else (b, a, step))
    return pairs


@torch.no_grad()
def step_metrics(
    model: torch.nn.Module,
    log_odds: LogOdds,
    examples: list[Example],
    pairs: list[tuple[int, int, int]],
    pad_id: int,
    batch_size: int,
) -> dict[str, float]:
    """Step-level AUROC and accuracy at 0.5 of P(good) against the hard labels, and how often
    the good step of a sibling pair (`sibling_pairs`) scores above the bad one (ties half)."""
    device = next(model.parameters()).device
    probabilities = []
    for start in range(0, len(examples), batch_size):
        batch = examples[start : start + batch_size]
        ids, mask, rows, cols, _, starts = collate(batch, pad_id, device)
        flat = iter(torch.sigmoid(log_odds(model, ids, mask, rows, cols, starts)).tolist())
        probabilities += [[next(flat) for _ in positions] for _, positions, _, _ in batch]
    p = np.array([x for ps in probabilities for x in ps])
    y = np.array([t > 0.5 for _, _, ts, _ in examples for t in ts])  # eval targets are 0 or 1
    result = {"eval_auroc": auroc(y, p), "eval_accuracy": float(((p >= 0.5) == y).mean())}
    if pairs:
        margins = np.array([probabilities[g][i] - probabilities[b][i] for g, b, i in pairs])
        result["eval_sibling_accuracy"] = float((margins > 0).mean() + (margins == 0).mean() / 2)
        result["eval_sibling_pairs"] = len(pairs)
    return result
