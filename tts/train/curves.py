"""`tts train plot`: a training log's metrics against steps, one panel per metric."""

from __future__ import annotations

from pathlib import Path

from tts.data.jsonl import read_records
from tts.errors import TTSError


def plot_log(log: Path, metrics: list[str], out: Path | None = None) -> Path:
    """Draw each metric of `log` (a log.jsonl or the folder holding it) against its steps into
    `out` (default: LOG's folder/curves.png); a metric the log never has is a one-line error."""
    path = log / "log.jsonl" if log.is_dir() else log
    if not path.is_file():
        raise TTSError(f"no training log at {path}")
    records = read_records(path)
    missing = [m for m in metrics if not any(m in r for r in records)]
    if missing:
        known = sorted({k for r in records for k in r} - {"step"})
        raise TTSError(f"{path} has no {', '.join(missing)}; it has {', '.join(known)}")
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    figure, grid = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.8), dpi=120)
    for axes, metric in zip(grid if len(metrics) > 1 else [grid], metrics):
        points = [(r["step"], r[metric]) for r in records if metric in r]
        axes.plot(*zip(*points), marker="o" if len(points) < 30 else None, markersize=3)
        axes.set_xlabel("step")
        axes.set_title(metric)
        axes.grid(alpha=0.3)
    figure.tight_layout()
    out = out or path.with_name("curves.png")
    figure.savefig(out)
    plt.close(figure)
    return out
