"""`tts compare` end to end on a tiny random model and a tiny PRM: real runs, real files."""

from __future__ import annotations

import json

import pytest

from tts.bench.compare import parse_strategy
from tts.cli import main
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
    assert "wall s/problem" in table and table.count("\n") == 2 + 2 + 6
    assert "majority" in printed and "skipped: beam" in printed

    timings = json.loads((tmp_path / "timings.json").read_text())
    main(args)  # everything is done: nothing runs again, the same rows come back
    assert json.loads((tmp_path / "timings.json").read_text()) == timings
    again = json.loads((tmp_path / "compare.json").read_text())
    assert again["rows"] == result["rows"]


def test_an_unknown_strategy_is_a_one_line_error(tiny_llama, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", "--model", str(tiny_llama), "--strategy", "beem", "--out", str(tmp_path)])
    assert "unknown strategy 'beem'" in str(exit_info.value.code)
