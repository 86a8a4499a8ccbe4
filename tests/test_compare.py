"""`tts compare` end to end on a tiny random model and a tiny PRM: real runs, real files."""

from __future__ import annotations

import json

import pytest

from tts.bench.compare import WALL, parse_strategy, run_compare
from tts.bench.report import TOKENS, figure
from tts.bench.run import BenchConfig
from tts.cli import main
from tts.data.jsonl import read_records
from tts.errors import TTSError


def test_strategy_specs_parse_with_typed_options():
    assert parse_strategy("majority") == ("majority", {}, None)
    assert parse_strategy("beam:beam_width=4,aggregation=min") == (
        "beam",
        {"beam_width": 4, "aggregation": "min"},
        None,
    )
    assert parse_strategy("majority@4,64") == ("majority", {}, [4, 64])
    assert parse_strategy("dvts:beam_width=2@8") == ("dvts", {"beam_width": 2}, [8])
    # A bracketed value is one YAML value, commas and all.
    assert parse_strategy("auto:hard=beam,hard_options={beam_width: 2, n: 4},x=[1, 2]@8") == (
        "auto",
        {"hard": "beam", "hard_options": {"beam_width": 2, "n": 4}, "x": [1, 2]},
        [8],
    )
    with pytest.raises(TTSError, match="expected NAME:KEY=VALUE"):
        parse_strategy("beam:4")
    for bad in ("majority@", "majority@4,x", "majority@0"):
        with pytest.raises(TTSError, match="expected @N,N"):
            parse_strategy(bad)


def test_compare_writes_one_figure_and_table_for_every_strategy(
    tiny_llama, tiny_prm_token, tmp_path, capsys
):
    args = ["compare", "--model", str(tiny_llama), "--dataset", "gsm8k", "--limit", "2"]
    args += [
        "--n",
        "1,2",
        "--max-tokens",
        "8",
        "--prm",
        str(tiny_prm_token),
        "--out",
        str(tmp_path),
    ]
    args += ["--strategy", "majority@1,2,4", "--strategy", "best_of_n"]
    args += ["--strategy", "beam:beam_width=2,max_step_tokens=4"]
    main(args)
    printed = capsys.readouterr().out
    assert (tmp_path / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = json.loads((tmp_path / "compare.json").read_text())
    runs = {(row["strategy"].split("[")[0], row["n"]) for row in result["rows"]}
    assert runs == {
        ("majority", 1),
        ("majority", 2),
        ("majority", 4),
        ("best_of_n", 1),
        ("best_of_n", 2),
        ("beam", 2),
    }
    assert all(row["problems"] == 2 and row["wall_seconds"] > 0 for row in result["rows"])
    assert len(result["skipped"]) == 1 and "n=1" in result["skipped"][0]
    table = (tmp_path / "compare.md").read_text()
    assert table.count("\n") == 2 + 2 + 6 + 1  # fences, header and rule, rows, the note
    lines = printed.splitlines()
    assert "latency s" in lines[0] and "problems/s" in lines[0]
    # Printed as they were run: the strategies in the order given, each at its budgets.
    assert [line.split()[:2] for line in lines[2:8]] == [
        ["majority", "1"],
        ["majority", "2"],
        ["majority", "4"],
        [f"best_of_n[prm={tiny_prm_token.name}]", "1"],
        [f"best_of_n[prm={tiny_prm_token.name}]", "2"],
        [f"beam[beam_width=2,max_step_tokens=4,prm={tiny_prm_token.name}]", "2"],
    ]
    for line, row in zip(lines[2:8], result["rows"]):  # throughput: problems per wall second
        assert float(line.split()[-1]) == pytest.approx(1 / row["wall_seconds"], abs=1e-3)
    assert lines[8].startswith("latency s: ") and "skipped: beam" in printed

    timings = json.loads((tmp_path / "timings.json").read_text())
    main(args)  # everything is done: nothing runs again, the same rows come back
    assert json.loads((tmp_path / "timings.json").read_text()) == timings
    again = json.loads((tmp_path / "compare.json").read_text())
    assert again["rows"] == result["rows"]


def test_an_unknown_strategy_is_a_one_line_error(tiny_llama, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", "--model", str(tiny_llama), "--strategy", "beem", "--out", str(tmp_path)])
    assert "unknown strategy 'beem'" in str(exit_info.value.code)
    for spec, where in (("majority:seed=3", "--seed"), ("majority:n=3", "@N")):
        with pytest.raises(SystemExit) as exit_info:
            main(
                ["compare", "--model", str(tiny_llama), "--strategy", spec, "--out", str(tmp_path)]
            )
        assert "is not a strategy option here" in str(exit_info.value.code)
        assert where in str(exit_info.value.code)


def test_a_strategys_own_sampling_options_override_the_runs(tiny_llama, tmp_path):
    """A row's label says temperature=0: it must have sampled greedily, not at --temperature."""
    base = BenchConfig(
        model=str(tiny_llama), dataset="gsm8k", limit=1, max_tokens=6, temperature=1.0, out=tmp_path
    )
    run_compare(base, ["majority:temperature=0,max_tokens=4@3", "majority@3"])
    rows = {r["strategy"]: r for r in read_records(tmp_path / "results.jsonl")}
    greedy, sampled = rows["majority[max_tokens=4,temperature=0]"], rows["majority"]
    assert greedy["params"]["temperature"] == 0 and greedy["params"]["max_tokens"] == 4
    assert len({c["text"] for c in greedy["candidates"]}) == 1
    assert all(c["tokens"] <= 4 for c in greedy["candidates"])
    assert sampled["params"]["temperature"] == 1.0
    assert len({c["text"] for c in sampled["candidates"]}) > 1


@pytest.fixture(scope="module")
def three_strategies(tiny_llama, tiny_prm_token, tmp_path_factory) -> tuple[dict, list]:
    """One compare run of three strategies at n=1,4 on a random model (every answer wrong);
    with each table line reported, the strategies that had written rows when it was."""
    out = tmp_path_factory.mktemp("three")
    base = BenchConfig(
        model=str(tiny_llama),
        dataset="gsm8k",
        limit=2,
        ns=[1, 4],
        max_tokens=8,
        device="cpu",
        out=out,
        prm=str(tiny_prm_token),
    )
    reported = []

    def report(line: str) -> None:
        written = read_records(out / "results.jsonl")
        reported.append((line, sorted({r["strategy"].split("[")[0] for r in written})))

    result = run_compare(base, ["majority", "best_of_n", "weighted_best_of_n"], report)
    return result, reported


def test_each_strategys_rows_are_reported_before_the_next_strategy_runs(three_strategies):
    _, reported = three_strategies
    header, rule, *rows = reported
    assert "problems/s" in header[0] and set(rule[0]) == {"-"}
    assert [(line.split()[1], seen) for line, seen in rows] == [
        ("1", ["majority"]),
        ("4", ["majority"]),  # best_of_n has not written a row yet
        ("1", ["best_of_n", "majority"]),
        ("4", ["best_of_n", "majority"]),
        ("1", ["best_of_n", "majority", "weighted_best_of_n"]),
        ("4", ["best_of_n", "majority", "weighted_best_of_n"]),
    ]


def test_one_budget_gets_labelled_ticks_and_no_point_hides_another(three_strategies):
    rows = [row for row in three_strategies[0]["rows"] if row["n"] == 4]
    drawing = figure(rows, "one budget", (TOKENS, WALL))
    drawing.canvas.draw()
    for axes, key in zip(drawing.axes, ("tokens", "wall_seconds")):
        labels = [t.get_text() for t in axes.get_xticklabels() if t.get_text()]
        assert labels, f"no labelled tick on the {key} axis"
        assert set(labels) <= {f"{r[key]:.3g}" for r in rows}  # the points' own values
        lines = [line for line in axes.get_lines() if not line.get_label().startswith("ceiling")]
        # Strategies on the very same point each keep a marker of their own, one size apart,
        # and their n labels stack instead of overwriting one another.
        assert len({(line.get_marker(), line.get_markersize()) for line in lines}) == 3
        assert len({(a.xy, a.xyann) for a in axes.texts}) == len(axes.texts) == 3


def test_the_ceiling_names_the_budget_it_is_for(three_strategies):
    rows = [row for row in three_strategies[0]["rows"] if row["strategy"] == "majority"]
    # A random model answers nothing: pass@1 and pass@4 tie at 0, and the legend said pass@1.
    assert [r["pass@n"] for r in rows] == [0.0, 0.0]
    legend = [t.get_text() for t in figure(rows, "n=1,4").legends[0].get_texts()]
    assert "ceiling: pass@4 of majority (0.00)" in legend
