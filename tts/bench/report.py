"""Tables and the accuracy-against-compute figure, from the rows of a results file."""

from __future__ import annotations

import math
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


class Table:
    """The rows as a text table, one line at a time: `tts compare` prints each strategy's lines
    as soon as they are done, so the column widths are fixed up front by the labels to come.

    Two columns say how long: `latency s`, the mean seconds a problem took from its start to
    its answer while sharing the backend with up to `--concurrency` others, and `problems/s`,
    the throughput: problems solved per second of the run's wall time (`wall_seconds` is its
    inverse; "-" for rows written before it was kept)."""

    NOTE = (
        "latency s: mean seconds from a problem's start to its answer, with up to --concurrency "
        "problems at once; problems/s: throughput over the run's wall time"
    )

    def __init__(self, labels: list[str]) -> None:
        self.width = max([len("strategy"), *map(len, labels)])

    def header(self) -> list[str]:
        header = (
            f"{'strategy':<{self.width}} {'n':>5} {'problems':>9} {'accuracy':>9} {'mean@n':>7} "
            f"{'pass@n':>7} {'maj@n':>7} {'tokens':>9} {'cached':>7} {'latency s':>10} "
            f"{'problems/s':>11}"
        )
        return [header, "-" * len(header)]

    def line(self, r: dict[str, Any]) -> str:
        wall = r.get("wall_seconds")
        throughput = f"{1 / wall:>11.3f}" if wall else f"{'-':>11}"
        return (
            f"{r['strategy']:<{self.width}} {r['n']:>5} {r['problems']:>9} {r['accuracy']:>9.3f} "
            f"{r['mean@n']:>7.3f} {r['pass@n']:>7.3f} {r['maj@n']:>7.3f} {r['tokens']:>9.1f} "
            f"{r['cached_share']:>7.1%} {r['seconds']:>10.2f} {throughput}"
        )


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a text table, with a line that says what the two time columns mean."""
    table = Table([r["strategy"] for r in rows])
    return "\n".join([*table.header(), *map(table.line, rows), table.NOTE])


Panel = tuple[str, str]  # (row key on the x axis, its axis label)
TOKENS: Panel = ("tokens", "generated tokens per problem (log scale)")
MARKERS = "osD^vP*X<>ph"


def plot(
    rows: list[dict[str, Any]], path: Path, title: str, panels: tuple[Panel, ...] = (TOKENS,)
) -> Path:
    """Draw `figure(rows, title, panels)` to `path`."""
    # "tight": the legend below the panels grows with the strategies; nothing of it is cut.
    figure(rows, title, panels).savefig(path, bbox_inches="tight")
    return path


def figure(rows: list[dict[str, Any]], title: str, panels: tuple[Panel, ...] = (TOKENS,)) -> Any:
    """Accuracy against compute (a matplotlib Figure), one panel per x (generated tokens, by
    default), one line per strategy, each point labelled with its n; the best pass@n of any row
    as a dashed ceiling (what a perfect selector reaches). One legend below the panels serves
    them all: inside, it would hide points, wherever they are."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    drawing = Figure(figsize=(7.5 * len(panels), 5.5), dpi=150)
    grid = drawing.subplots(1, len(panels), squeeze=False)[0]
    for axes, (key, label) in zip(grid, panels):
        _draw(axes, rows, key, label)
    drawing.suptitle(title, fontsize=10)
    drawing.tight_layout()
    drawing.legend(
        *grid[0].get_legend_handles_labels(),
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=len(panels) + 1,
        fontsize=7,
        frameon=False,
    )
    return drawing


def _draw(axes: Any, rows: list[dict[str, Any]], key: str, label: str) -> None:
    by_strategy: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_strategy[row["strategy"]].append(row)
    # Strategies often land on the very same point (same samples, same answer): each gets its
    # own hollow marker, the first ones larger, so every one shows around the others, and
    # labels at a shared point stack instead of overwriting one another.
    labelled: dict[tuple[float, float], int] = defaultdict(int)
    for k, (strategy, points) in enumerate(sorted(by_strategy.items())):
        points.sort(key=lambda r: r[key])
        xs = [max(r[key], 1e-9) for r in points]
        ys = [r["accuracy"] for r in points]
        line = axes.plot(
            xs,
            ys,
            marker=MARKERS[k % len(MARKERS)],
            markersize=max(14 - 3 * k, 5),
            fillstyle="none",
            markeredgewidth=1.5,
            alpha=0.85,
            label=strategy,
        )[0]
        for r, x, y in zip(points, xs, ys):
            place = (round(math.log10(x), 2), round(y, 3))
            axes.annotate(
                f"n={r['n']}",
                (x, y),
                textcoords="offset points",
                xytext=(7, 4 + 9 * labelled[place]),
                fontsize=7,
                color=line.get_color(),
            )
            labelled[place] += 1
    # The largest budget among ties: pass@n only grows with n, so an equal ceiling reached at a
    # smaller n is also reached at the larger one, which is the budget it stands for.
    ceiling = max(rows, key=lambda r: (r["pass@n"], r["n"]), default=None)
    if ceiling is not None:
        axes.axhline(
            ceiling["pass@n"],
            linestyle="--",
            color="grey",
            linewidth=1,
            label=f"ceiling: pass@{ceiling['n']} of {ceiling['strategy']} "
            f"({ceiling['pass@n']:.2f})",
        )
    _log_axis(axes.xaxis, [max(r[key], 1e-9) for r in rows])
    axes.set_xlabel(label)
    axes.set_ylabel("accuracy")
    # From just under the tenth at or below the lowest point to the top: a run whose points all
    # sit between 0.5 and 0.7 should not squeeze them into a fifth of the height.
    lowest = min((r["accuracy"] for r in rows), default=0.0)
    axes.set_ylim(max(math.floor(lowest * 10) / 10 - 0.05, -0.05), 1.05)
    axes.grid(True, which="both", alpha=0.3)


def _log_axis(axis: Any, xs: list[float]) -> None:
    """A log x axis whose ticks are labelled as plain numbers. Over less than a decade the
    log scale's own ticks may all fall outside the data (one budget: none at all), so the ticks
    are then the data's own values, those too close to the previous one left out."""
    import matplotlib.ticker as ticker

    axis.axes.set_xscale("log")
    if not xs:
        return
    low, high = min(xs), max(xs)
    axis.axes.set_xlim(low / 1.4, high * 1.4)
    if high / low >= 10:
        # 20, 50, 100, 200, 500, ... rather than 2x10^1.
        plain = ticker.FuncFormatter(lambda x, _: f"{x:g}" if f"{x:.0e}"[0] in "125" else "")
        axis.set_major_formatter(plain)
        axis.set_minor_formatter(plain)
        return
    ticks: list[float] = []
    for x in sorted(xs):
        if not ticks or x / ticks[-1] >= 1.15:
            ticks.append(x)
    axis.set_major_locator(ticker.FixedLocator(ticks))
    axis.set_major_formatter(ticker.FixedFormatter([f"{x:.3g}" for x in ticks]))
    axis.set_minor_locator(ticker.NullLocator())
