"""`tts train plot`: a training log's metrics against steps, one panel per metric."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tts.data.jsonl import read_records
from tts.errors import TTSError

# What each loop's log is read for, in panel order: GRPO's reward, accuracy, length and
# pass@1, SFT's loss and accuracy, a PRM's loss and step AUROC; a log gets those it has.
MAIN_METRICS = [
    "reward",
    "accuracy",
    "length_mean",
    "loss",
    "eval_pass@1",
    "eval_accuracy",
    "eval_auroc",
    "eval_sibling_accuracy",
]
COLUMNS = 4  # most panels per row


def default_metrics(records: list[dict[str, Any]]) -> list[str]:
    """The metrics to draw when none are asked for: those of `MAIN_METRICS` the log has, else
    every number it has."""
    present = {k for r in records for k, v in r.items() if isinstance(v, int | float)} - {"step"}
    return [m for m in MAIN_METRICS if m in present] or sorted(present)


def plot_log(log: Path, metrics: list[str] | None = None, out: Path | None = None) -> Path:
    """Draw each metric of `log` (a log.jsonl or the folder holding it) against its steps into
    `out` (default: LOG's folder/curves.png). Without `metrics`, the log's main ones
    (`default_metrics`); a metric the log never has is a one-line error."""
    path = log / "log.jsonl" if log.is_dir() else log
    if not path.is_file():
        raise TTSError(f"no training log at {path}")
    records = read_records(path)
    known = sorted({k for r in records for k in r} - {"step"})
    metrics = metrics or default_metrics(records)
    if not metrics:
        raise TTSError(f"{path} has no metrics to draw")
    missing = [m for m in metrics if m not in known]
    if missing:
        raise TTSError(f"{path} has no {', '.join(missing)}; it has {', '.join(known)}")
    # matplotlib here, not at the top: a heavy import only plotting needs.
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    rows = math.ceil(len(metrics) / COLUMNS)
    columns = math.ceil(len(metrics) / rows)  # rows filled evenly: 5 panels are 3 + 2
    figure, grid = plt.subplots(
        rows, columns, figsize=(4.5 * columns, 3.8 * rows), dpi=120, squeeze=False
    )
    for axes, metric in zip(grid.flat, metrics):
        points = [(r["step"], r[metric]) for r in records if metric in r]
        axes.plot(*zip(*points), marker="o" if len(points) < 30 else None, markersize=3)
        axes.set_xlabel("step")
        axes.set_title(metric)
        axes.grid(alpha=0.3)
    for axes in grid.flat[len(metrics) :]:
        axes.set_visible(False)
    figure.tight_layout()
    out = out or path.with_name("curves.png")
    figure.savefig(out)
    plt.close(figure)
    return out
