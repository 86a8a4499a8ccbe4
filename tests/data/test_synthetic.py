"""Synthetic tasks: every trace's answer verifies, step checkers accept right steps and reject
wrong ones, seeds fix everything, eval sets stay apart from training data."""

from __future__ import annotations

import json

import pytest

from tts.cli import main
from tts.data.datasets import load_dataset
from tts.data.synthetic import arith, eval_set, make_problem, trace
from tts.verifiers import extract_answer, math_equal

DIFFICULTIES = sorted(arith.DIFFICULTIES)


@pytest.mark.parametrize("difficulty", DIFFICULTIES)
@pytest.mark.parametrize("style", ["short", "long"])
def test_every_trace_ends_in_the_gold_answer(difficulty, style):
    for index in range(150):
        problem = make_problem("arith", difficulty, index)
        text = trace(problem, style, error_rate=0.5)
        assert math_equal(extract_answer(text), problem.answer), text
        assert int(problem.answer) == eval(problem.problem[len("Evaluate ") : -1])  # noqa: S307


@pytest.mark.parametrize("difficulty", DIFFICULTIES)
def test_step_checker_accepts_each_step_and_rejects_corruptions(difficulty):
    for index in range(60):
        problem = make_problem("arith", difficulty, index)
        steps = arith.solution_steps(problem.expression)
        assert len(steps) == arith.DIFFICULTIES[difficulty][0]
        for i, step in enumerate(steps):
            assert arith.check_step(problem.problem, steps[:i], step)
            a, rest = step.split(" = ", 1)
            result, left = rest.split(", leaving ", 1)
            corrupted = [
                f"{a} = {int(result) + 1}, leaving {left}",  # a wrong result
                f"{a} = {result}, leaving {left[:-1]} + 1.",  # a wrong remainder
                step.replace(" = ", " == "),  # malformed
                steps[-1] if i < len(steps) - 1 else steps[0],  # not the next operation
            ]
            assert not any(arith.check_step(problem.problem, steps[:i], c) for c in corrupted)


def test_long_traces_slip_and_repair_at_the_asked_rate():
    problem = make_problem("arith", 3, 7)
    assert "Wait," in trace(problem, "long", error_rate=1.0)
    clean = trace(problem, "long", error_rate=0.0)
    assert clean.startswith("<think>\n") and "</think>" in clean and "Wait" not in clean
    assert clean.split("</think>\n\n")[1] == trace(problem, "short")


def test_seeds_fix_problems_and_eval_sets_are_apart():
    assert make_problem("arith", 3, 5) == make_problem("arith", 3, 5)
    assert make_problem("arith", 3, 5, seed=1).problem != make_problem("arith", 3, 5).problem
    assert len(eval_set("arith", 2)) == 200 and eval_set("arith", 2) == eval_set("arith", 2)
    # The eval split is its own seed stream (small difficulties have few distinct expressions,
    # so the sets may share some; the streams must not be the same).
    evals = [p.problem for p in eval_set("arith", 4)]
    train = {make_problem("arith", 4, i).problem for i in range(2000)}
    assert len(set(evals) & train) <= 2
    loaded = load_dataset("synth:arith:3:10")
    assert [p.answer for p in loaded] == [p.answer for p in eval_set("arith", 3, 10)]


def test_data_synth_writes_sft_lines_and_resumes(tmp_path, capsys):
    out = tmp_path / "sft.jsonl"
    args = ["data", "synth", "--task", "arith", "--difficulty", "2", "--style", "long"]
    main([*args, "--n", "20", "--out", str(out)])
    main([*args, "--n", "30", "--out", str(out)])
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 30 == len({line["meta"]["id"] for line in lines})
    first = lines[0]
    assert [m["role"] for m in first["messages"]] == ["user", "assistant"]
    assert first["messages"][0]["content"].startswith("Evaluate ")
    assert math_equal(extract_answer(first["messages"][1]["content"]), first["meta"]["answer"])
    assert capsys.readouterr().out.splitlines()[-1].startswith("10 new problems")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--task", "chess"], "unknown synthetic task 'chess'"),
        (["--difficulty", "0"], "difficulty 0 is out of range for arith (1-5)"),
        (["--n", "0"], "n must be >= 1"),
    ],
)
def test_bad_input_is_one_line(tmp_path, args, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "synth", "--out", str(tmp_path / "x.jsonl"), *args])
    error = str(exit_info.value.code)
    assert error.startswith("tts: error: ") and message in error and "\n" not in error
