"""Tables and the accuracy-against-compute figure, from the rows of a results file."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any


def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per strategy and n: problems, accuracy, mean@n (per-sample accuracy), pass@n, maj@n, mean
    generated tokens and PRM input tokens, cached share of prompt tokens and seconds per
    problem."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        groups[record["strategy"], record["n"]].append(record)
    rows = []
    for (strategy, n), group in sorted(groups.items()):
        count = len(group)
        rows.append(
            {
                "strategy": strategy,
                "n": n,
                "problems": count,
                "accuracy": sum(r["correct"] for r in group) / count,
                "pass@n": sum(r["pass"] for r in group) / count,
                # The per-sample accuracy: what one sample gets right on average (pass@1).
                "mean@n": sum(_sample_accuracy(r) for r in group) / count,
                "maj@n": sum(r["majority_correct"] for r in group) / count,
                "tokens": sum(r["usage"]["completion_tokens"] for r in group) / count,
                "scorer_tokens": sum(r["usage"]["scorer_tokens"] for r in group) / count,
                "cached_share": _cached_share(group),
                "seconds": sum(r["usage"]["seconds"] for r in group) / count,
            }
        )
    return rows


def _sample_accuracy(record: dict[str, Any]) -> float:
    candidates = record["candidates"]
    return sum(c["correct"] for c in candidates) / len(candidates) if candidates else 0.0


def _cached_share(group: list[dict[str, Any]]) -> float:
    prompt = sum(r["usage"]["prompt_tokens"] for r in group)
    return sum(r["usage"]["cached_tokens"] for r in group) / prompt if prompt else 0.0


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a text table; with a `wall_seconds` column when the rows have one (`tts
    compare`: wall-clock time per problem, against `s/problem`, the time each solve took)."""
    width = max([len("strategy")] + [len(r["strategy"]) for r in rows])
    wall = bool(rows) and all(r.get("wall_seconds") is not None for r in rows)
    header = (
        f"{'strategy':<{width}} {'n':>5} {'problems':>9} {'accuracy':>9} {'mean@n':>7} "
        f"{'pass@n':>7} {'maj@n':>7} {'tokens':>9} {'cached':>7} {'s/problem':>10}"
    ) + (f" {'wall s/problem':>15}" if wall else "")
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['strategy']:<{width}} {r['n']:>5} {r['problems']:>9} {r['accuracy']:>9.3f} "
            f"{r['mean@n']:>7.3f} {r['pass@n']:>7.3f} {r['maj@n']:>7.3f} {r['tokens']:>9.1f} "
            f"{r['cached_share']:>7.1%} {r['seconds']:>10.2f}"
        )
        if wall:
            lines[-1] += f" {r['wall_seconds']:>15.3f}"
    return "\n".join(lines)


Panel = tuple[str, str]  # (row key on the x axis, its axis label)
TOKENS: Panel = ("tokens", "generated tokens per problem (log scale)")


def plot(
    rows: list[dict[str, Any]], path: Path, title: str, panels: tuple[Panel, ...] = (TOKENS,)
) -> Path:
    """Accuracy against compute, one panel per x (generated tokens, by default), one line per
    strategy, each point labelled with its n; the best pass@n of any row as a dashed ceiling
    (what a perfect selector reaches)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    figure, grid = plt.subplots(1, len(panels), figsize=(7.5 * len(panels), 5.5), dpi=150)
    for axes, (key, label) in zip(grid if len(panels) > 1 else [grid], panels):
        _draw(axes, rows, key, label)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def _draw(axes: Any, rows: list[dict[str, Any]], key: str, label: str) -> None:
    import matplotlib.ticker

    by_strategy: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_strategy[row["strategy"]].append(row)
    for strategy, points in sorted(by_strategy.items()):
        points.sort(key=lambda r: r[key])
        xs = [max(r[key], 1e-9) for r in points]
        line = axes.plot(xs, [r["accuracy"] for r in points], marker="o", label=strategy)[0]
        for r, x in zip(points, xs):
            axes.annotate(
                f"n={r['n']}",
                (x, r["accuracy"]),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=7,
                color=line.get_color(),
            )
    ceiling = max(rows, key=lambda r: r["pass@n"], default=None)
    if ceiling is not None:
        axes.axhline(
            ceiling["pass@n"],
            linestyle="--",
            color="grey",
            linewidth=1,
            label=f"ceiling: pass@{ceiling['n']} of {ceiling['strategy']}",
        )
    axes.set_xscale("log")
    # Plain numbers on the log axis: 20, 50, 100, 200, 500, ... rather than 2x10^1.
    plain = matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}" if f"{x:g}"[0] in "125" else "")
    axes.xaxis.set_major_formatter(plain)
    axes.xaxis.set_minor_formatter(plain)
    axes.set_xlabel(label)
    axes.set_ylabel("accuracy")
    axes.set_ylim(-0.02, 1.02)
    axes.grid(True, which="both", alpha=0.3)
    # Below the axes: inside, it would hide points, wherever they are.
    axes.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
