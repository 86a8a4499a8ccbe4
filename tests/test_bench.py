"""`tts bench` end to end: the real command on a real tiny model folder and real files."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from tts.cli import main
from tts.data.progress import Progress
from tts.engine import SamplingParams, load
from tts.prompts import DEFAULT_INSTRUCTION, build_prompt
from tts.verifiers import math_equal

BENCH = ["--backend", "hf", "--dataset", "gsm8k", "--strategy", "majority", "--device", "cpu"]


def tts(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tts.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TQDM_DISABLE": "1"},
        **kwargs,
    )


def rows(out: Path) -> list[dict]:
    return [orjson.loads(line) for line in (out / "results.jsonl").read_bytes().splitlines()]


def without_timing(records: list[dict]) -> dict:
    """Records by key, minus wall-clock seconds (the only field allowed to differ between runs)."""
    keyed = {}
    for record in records:
        record = {**record, "usage": {k: v for k, v in record["usage"].items() if k != "seconds"}}
        keyed[(record["problem_id"], record["n"])] = record
    return keyed


def test_tiny_model_command_writes_a_loadable_folder(tmp_path):
    process = tts("model", "tiny", "--out", str(tmp_path / "m"), "--family", "qwen2")
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {
        p.name for p in (tmp_path / "m").iterdir()
    }
    assert json.loads((tmp_path / "m" / "config.json").read_text())["model_type"] == "qwen2"


def test_bench_writes_results_summary_and_table(tiny_llama, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["bench", "--model", str(tiny_llama), *BENCH, "--n", "1,2", "--limit", "3"]
    main([*args, "--max-tokens", "8", "--out", str(out)])
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[-4:] == ["cached", "latency", "s", "problems/s"]
    assert "pass@n" in table[0] and "maj@n" in table[0] and table[4].startswith("latency s:")
    records = rows(out)
    # One budget after another, so that each n's rows have a wall time, and a throughput, of
    # their own.
    assert [r["n"] for r in records] == [1, 1, 1, 2, 2, 2]
    assert sorted((r["problem_id"], r["n"]) for r in records) == [
        (f"gsm8k-test-{i}", n) for i in range(3) for n in (1, 2)
    ]
    timings = json.loads((out / "timings.json").read_text())
    assert set(timings) == {"majority n=1", "majority n=2"}
    for line, n in zip(table[2:4], (1, 2)):
        spent = timings[f"majority n={n}"]
        assert spent["rows"] == 3 and spent["seconds"] > 0
        assert float(line.split()[-1]) == pytest.approx(3 / spent["seconds"], abs=1e-3)
    for record in records:
        assert len(record["candidates"]) == record["n"]
        assert record["gold"] and record["dataset"] == "gsm8k" and record["strategy"] == "majority"
        assert record["usage"]["completion_tokens"] == sum(
            c["tokens"] for c in record["candidates"]
        )
        answer = record["answer"]
        assert record["correct"] == (answer is not None and math_equal(answer, record["gold"]))
    summary = json.loads((out / "summary.json").read_text())
    assert [row["n"] for row in summary["rows"]] == [1, 2]
    assert all(row["problems"] == 3 for row in summary["rows"])

    # The same command again has nothing left to do and changes nothing.
    before = (out / "results.jsonl").read_bytes()
    main([*args, "--max-tokens", "8", "--out", str(out)])
    assert (out / "results.jsonl").read_bytes() == before


def test_bench_runs_on_the_native_engine_by_default(tiny_qwen, tmp_path, capsys):
    out = tmp_path / "native"
    main(
        [
            "bench",
            "--model",
            str(tiny_qwen),
            "--dataset",
            "aime24",
            "--n",
            "4",
            "--limit",
            "2",
            "--max-tokens",
            "8",
            "--device",
            "cpu",
            "--out",
            str(out),
        ]
    )
    assert "accuracy" in capsys.readouterr().out
    assert json.loads((out / "run.json").read_text())["backend"] == "native"
    for record in rows(out):
        # The 4 samples fork from one prefill: 3 of them report the whole prompt as cached.
        assert record["usage"]["cached_tokens"] == 3 * record["usage"]["prompt_tokens"] // 4


def test_killed_run_resumes_to_the_same_results_without_duplicates(tiny_llama, tmp_path):
    args = ["bench", "--model", str(tiny_llama), *BENCH, "--n", "1,3", "--limit", "10"]
    args += ["--max-tokens", "24", "--concurrency", "2", "--temperature", "1.0"]

    reference = tts(*args, "--out", str(tmp_path / "whole"))
    killed_out = tmp_path / "killed"
    victim = tts(*args, "--out", str(killed_out), start_new_session=True)
    results = killed_out / "results.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if results.exists() and results.read_bytes().count(b"\n") >= 4:
            break
        time.sleep(0.01)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.communicate()
    written = results.read_bytes().count(b"\n")
    assert 4 <= written < 20, "the run should have been stopped halfway"
    with results.open("ab") as handle:  # as if the kill landed in the middle of a write
        handle.write(b'{"problem_id": "gsm8k-test-9", "n": 3, "cand')

    resumed = tts(*args, "--out", str(killed_out))
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    _, stderr = reference.communicate(timeout=300)
    assert reference.returncode == 0, stderr

    final = rows(killed_out)
    assert len(final) == 20 == len({(r["problem_id"], r["n"]) for r in final})
    assert without_timing(final) == without_timing(rows(tmp_path / "whole"))


def test_engine_options_turn_on_speculation_without_changing_the_samples(tiny_qwen, tmp_path):
    common = ["bench", "--model", str(tiny_qwen), "--dataset", "aime24", "--n", "4"]
    common += ["--limit", "2", "--max-tokens", "12", "--device", "cpu"]
    main([*common, "--out", str(tmp_path / "off")])
    main([*common, "--engine-option", "speculative_tokens=4", "--out", str(tmp_path / "on")])
    texts = {
        side: [[c["text"] for c in r["candidates"]] for r in rows(tmp_path / side)]
        for side in ("off", "on")
    }
    assert texts["on"] == texts["off"]  # seeded samples: the same tokens, drafted or not
    # How fast the engine runs is no setting the results depend on: a run may resume with it.
    main([*common, "--engine-option", "speculative_tokens=2", "--out", str(tmp_path / "off")])


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "change, message",
    [
        ({"--model": "/no/such/model"}, "model folder not found: /no/such/model"),
        ({"--dataset": "math5000"}, "unknown dataset 'math5000'"),
        ({"--dataset": "BAD_JSONL"}, "bad.jsonl, line 2: not valid JSON"),
        ({"--temperature": "-1"}, "temperature: Input should be greater than or equal to 0"),
        ({"--strategy": "beem"}, "unknown strategy 'beem'"),
        ({"--engine-option": "speculative_tokenz=4"}, "unknown native engine option"),
    ],
)
def test_bad_input_is_a_one_line_error(tiny_llama, tmp_path, capsys, change, message):
    bad = write(tmp_path / "bad.jsonl", '{"problem": "p", "answer": "1"}\n{"problem": \n')
    options = {"--model": str(tiny_llama), "--dataset": "gsm8k", "--out": str(tmp_path / "o")}
    options |= {k: str(bad) if v == "BAD_JSONL" else v for k, v in change.items()}
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", *[x for kv in options.items() for x in kv], "--limit", "2"])
    error = str(exit_info.value.code)
    assert error.startswith("tts: error: ") and message in error and "\n" not in error


@pytest.mark.parametrize("budgets", ["0", "1,-4", "four"])
def test_bad_budgets_are_refused_by_the_parser(tiny_llama, tmp_path, capsys, budgets):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--model", str(tiny_llama), "--n", budgets, "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "argument --n" in error and "Traceback" not in error


def test_a_failed_start_does_not_pin_the_settings(tiny_llama, tmp_path, capsys):
    args = [
        "bench",
        *BENCH,
        "--n",
        "1",
        "--limit",
        "1",
        "--max-tokens",
        "4",
        "--out",
        str(tmp_path),
    ]
    with pytest.raises(SystemExit):
        main([*args, "--model", str(tmp_path / "typo")])
    main([*args, "--model", str(tiny_llama)])  # the corrected command runs
    assert len(rows(tmp_path)) == 1


def test_resuming_with_other_settings_is_refused(tiny_llama, tmp_path, capsys):
    args = ["bench", "--model", str(tiny_llama), *BENCH, "--n", "1", "--limit", "1"]
    main([*args, "--max-tokens", "4", "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--max-tokens", "8", "--out", str(tmp_path)])
    assert "other settings (max_tokens)" in str(exit_info.value.code)


def test_results_without_their_settings_are_refused(tiny_llama, tmp_path, capsys):
    row = {"problem_id": "gsm8k-test-0", "strategy": "majority", "n": 1}
    (tmp_path / "results.jsonl").write_bytes(orjson.dumps(row) + b"\n")
    args = ["bench", "--model", str(tiny_llama), *BENCH, "--n", "1", "--limit", "1"]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--out", str(tmp_path)])
    error = str(exit_info.value.code)
    assert "holds records but no run.json beside it" in error and "\n" not in error


def test_several_strategies_share_a_folder_and_a_figure(
    tiny_llama, tiny_prm_token, tmp_path, capsys
):
    out = tmp_path / "compare"
    common = ["bench", "--model", str(tiny_llama), "--dataset", "gsm8k", "--limit", "2"]
    common += ["--max-tokens", "16", "--device", "cpu", "--out", str(out)]
    main([*common, "--strategy", "majority", "--n", "1,2"])
    main(
        [*common, "--strategy", "beam", "--prm", str(tiny_prm_token), "--n", "4"]
        + ["-o", "beam_width=2", "-o", "max_step_tokens=8", "--plot"]
    )
    table = capsys.readouterr().out.splitlines()
    beam_label = f"beam[beam_width=2,max_step_tokens=8,prm={tiny_prm_token.name}]"
    assert any(line.startswith(beam_label) for line in table)
    assert any(line.startswith("majority ") for line in table)
    records = rows(out)
    assert {(r["strategy"], r["n"]) for r in records} == {
        ("majority", 1),
        ("majority", 2),
        (beam_label, 4),
    }
    beam = [r for r in records if r["strategy"] == beam_label]
    assert all(r["tree"]["nodes"] and r["usage"]["scorer_calls"] > 0 for r in beam)
    assert all(r["params"]["beam_width"] == 2 and r["params"]["prm"] for r in beam)
    summary = json.loads((out / "summary.json").read_text())
    assert {row["strategy"] for row in summary["rows"]} == {"majority", beam_label}
    png = (out / "accuracy.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_bad_strategy_options_are_refused_before_loading(tiny_llama, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "bench",
                "--model",
                str(tiny_llama),
                "--strategy",
                "beam",
                "-o",
                "beam_width=3",
                "--n",
                "4",
                "--out",
                str(tmp_path),
            ]
        )
    assert "multiple of beam_width" in str(exit_info.value.code)
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "bench",
                "--model",
                str(tiny_llama),
                "--strategy",
                "beam",
                "-o",
                "beam_widht=2",
                "--n",
                "4",
                "--out",
                str(tmp_path),
            ]
        )
    assert "beam_widht: Extra inputs are not permitted" in str(exit_info.value.code)


def test_the_bar_counts_samples_as_each_generation_returns():
    backend = load("builtin", device="cpu")
    progress = Progress(total=8, desc="test")
    prompt = build_prompt(backend.tokenizer, "What is 2 + 3?", DEFAULT_INSTRUCTION)
    try:
        whole = progress.track(backend, 4)
        solutions = asyncio.run(whole.generate(prompt, SamplingParams(n=4, max_tokens=16, seed=1)))
        # Counted as they come back, before the row is done.
        assert progress.samples == 4
        assert progress.tokens == sum(len(c.token_ids) for c in solutions)
        whole.settle()
        assert progress.samples == 4

        stepwise = progress.track(backend, 4)
        params = SamplingParams(n=4, max_tokens=16, seed=1, stop=("\n\n",))
        steps = asyncio.run(stepwise.generate(prompt, params))
        # A step cut at the delimiter is not a finished sample; one that ended the solution is.
        ended = sum(c.finish_reason == "stop" and c.stop_reason != "\n\n" for c in steps)
        assert progress.samples == 4 + ended
        stepwise.settle()  # the row is done: its whole budget is counted, once
        assert progress.samples == 8
    finally:
        progress.close()


@pytest.mark.parametrize(
    "command, warned",
    [
        (["bench", "--dataset", "math500"], True),
        (["bench", "--dataset", "synth:arith:1"], False),
        (["compare", "--dataset", "math500", "--strategy", "majority@1,2"], True),
        (["data", "difficulty", "--dataset", "gsm8k", "--n", "1"], True),
    ],
)
def test_the_builtin_model_warns_once_off_its_synthetic_tasks(tmp_path, capsys, command, warned):
    out = tmp_path / ("out.jsonl" if command[0] == "data" else "out")
    main([*command, "--limit", "1", "--max-tokens", "4", "--device", "cpu", "--out", str(out)])
    err = capsys.readouterr().err
    assert err.count("warning: the built-in model") == warned
    if warned:
        assert f"on {command[command.index('--dataset') + 1]} expect" in err
