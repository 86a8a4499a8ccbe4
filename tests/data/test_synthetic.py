"""Synthetic tasks: every trace's answer verifies, step checkers accept right steps and reject
wrong ones, seeds fix everything, eval sets stay apart from training data."""

from __future__ import annotations

import json
import random
import re

import pytest

from tts.cli import main
from tts.data.datasets import load_dataset
from tts.data.synthetic import (
    TASKS,
    arith,
    check_step,
    countdown,
    eval_set,
    make_problem,
    trace,
    write_sft,
)
from tts.errors import TTSError
from tts.prompts import DEFAULT_INSTRUCTION
from tts.verifiers import extract_answer, math_equal

CASES = [(task, d) for task, module in TASKS.items() for d in sorted(module.DIFFICULTIES)]


@pytest.mark.parametrize("task, difficulty", CASES)
@pytest.mark.parametrize("style", ["short", "long"])
def test_every_trace_ends_in_the_gold_answer(task, difficulty, style):
    for index in range(120):
        problem = make_problem(task, difficulty, index)
        text = trace(problem, style, error_rate=0.5)
        assert math_equal(extract_answer(text), problem.answer), text
        if task == "arith":
            assert int(problem.answer) == eval(problem.problem[len("Evaluate ") : -1])  # noqa: S307
        else:
            assert countdown.check_answer(problem.problem, extract_answer(text)), text


def corruptions(task: str, steps: list[str], i: int) -> list[str]:
    """Wrong versions of steps[i]: a wrong result, an unavailable number or a wrong remainder,
    a malformed line, a step that is not the next one."""
    step = steps[i]
    lhs, rest = step.split(" = ", 1)
    result, left = rest.split(", leaving ", 1)
    a, op, b = lhs.split()
    other = steps[-1] if i < len(steps) - 1 else steps[0]
    common = [
        f"{lhs} = {int(result) + 1}, leaving {left}",
        step.replace(" = ", " == "),
        step.removesuffix("."),
        "",
    ]
    if task == "arith":
        return common + [f"{lhs} = {result}, leaving {left[:-1]} + 1.", other]
    big = int(a) * 10**6  # right arithmetic, but not a number at hand
    unavailable = f"{big} {op} {b} = {countdown.combine(big, op, int(b))}"
    return common + [
        f"{unavailable}, leaving {left}",
        f"{lhs} = {result}, leaving {left[:-1]}, 7.",  # claims a number that is not left
        f"{a} % {b} = {result}, leaving {left}",
    ]


@pytest.mark.parametrize("task, difficulty", CASES)
def test_step_checker_accepts_each_step_and_rejects_corruptions(task, difficulty):
    module = TASKS[task]
    for index in range(60):
        problem = make_problem(task, difficulty, index)
        steps = module.solution_steps(problem.instance)
        for i, step in enumerate(steps):
            assert check_step(problem, steps[:i], step), (problem.problem, steps[:i], step)
            for corrupted in corruptions(task, steps, i):
                assert not check_step(problem, steps[:i], corrupted), (steps[:i], corrupted)
        # a wrong earlier step makes any next step invalid
        if len(steps) > 1:
            assert not check_step(problem, [corruptions(task, steps, 0)[0]], steps[1])
    assert arith.DIFFICULTIES[3][0] == len(
        arith.solution_steps(make_problem("arith", 3, 0).instance)
    )


def test_countdown_answers_are_checked_whole():
    problem = make_problem("countdown", 2, 0)  # Use 5, 4, 4, 2 to make 37 ...
    assert countdown.check_answer(problem.problem, "4 * 2 * 4 + 5")
    assert countdown.check_answer(problem.problem, "(4 \\times 2) \\times 4 + 5")
    assert not countdown.check_answer(problem.problem, "37")  # the target alone solves nothing
    assert not countdown.check_answer(problem.problem, "4 * 2 * 4 + 5 + 0")  # 0 is not given
    assert not countdown.check_answer(problem.problem, "5 * 2 * 4 - 3")  # 3 is not given
    assert not countdown.check_answer(problem.problem, "4 * 4 * 2 + 5 * 1")
    assert not countdown.check_answer(problem.problem, "import os")
    # every problem needs at least one step, and the documented share needs backtracking
    fails = [
        not countdown.greedy_solves(make_problem("countdown", 3, i).instance) for i in range(300)
    ]
    assert 0.5 < sum(fails) / len(fails) < 0.75


@pytest.mark.parametrize("task", TASKS)
def test_long_traces_make_and_repair_mistakes_at_the_asked_rate(task):
    for index in range(20):
        problem = make_problem(task, 3, index)
        assert "Wait," in trace(problem, "long", error_rate=1.0)
        clean = trace(problem, "long", error_rate=0.0)
        assert clean.startswith("<think>\n") and "\n</think>\n\n" in clean and "Wait" not in clean
        assert clean.split("</think>\n\n")[1] == trace(problem, "short")
        # the mistakes are real: some step inside <think> fails the step checker
        thinking = trace(problem, "long", error_rate=1.0).split("</think>")[0]
        steps = [s for s in thinking.removeprefix("<think>\n").split("\n\n") if "leaving" in s]
        assert not all(check_step(problem, steps[:i], s) for i, s in enumerate(steps))


@pytest.mark.parametrize("task", TASKS)
def test_seeds_fix_problems_and_eval_sets_are_apart(task):
    assert make_problem(task, 3, 5) == make_problem(task, 3, 5)
    first = [make_problem(task, 3, i).problem for i in range(20)]
    assert first != [make_problem(task, 3, i, seed=1).problem for i in range(20)]
    assert len(eval_set(task, 2)) == 200 and eval_set(task, 2) == eval_set(task, 2)
    assert eval_set(task, 2, 10) == eval_set(task, 2)[:10]
    for difficulty in (1, 4):  # 1 has few distinct problems, so chance overlap would be likely
        evals = {p.problem for p in eval_set(task, difficulty)}
        assert len(evals) == 200
        assert not evals & {make_problem(task, difficulty, i).problem for i in range(3000)}
    loaded = load_dataset(f"synth:{task}:3:10")
    assert [p.id for p in loaded] == [f"synth-{task}-3-{i}" for i in range(10)]
    assert loaded[0].metadata == {"task": task, "difficulty": 3}
    assert [p.answer for p in loaded] == [p.answer for p in eval_set(task, 3, 10)]


def test_data_synth_writes_sft_lines_and_resumes(tmp_path, capsys):
    out = tmp_path / "sft.jsonl"
    args = ["data", "synth", "--task", "countdown", "--difficulty", "2", "--style", "long"]
    main([*args, "--n", "20", "--out", str(out)])
    with out.open("r+b") as handle:  # a run killed mid-line leaves a torn last record
        handle.truncate(out.stat().st_size - 30)
    main([*args, "--n", "30", "--out", str(out)])
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 30 == len({line["meta"]["id"] for line in lines})
    assert capsys.readouterr().out.splitlines()[-1].startswith("11 new problems")
    first = lines[0]
    problem = make_problem("countdown", 2, 0)
    assert first["messages"][:-1] == [
        {"role": "user", "content": f"{problem.problem}\n{DEFAULT_INSTRUCTION}"}
    ]
    assert first["messages"][-1] == {"role": "assistant", "content": trace(problem, "long")}
    assert first["meta"] == {
        "task": "countdown",
        "difficulty": 2,
        "style": "long",
        "seed": 0,
        "id": problem.id,
        "answer": problem.answer,
    }
    for line in lines:
        assert math_equal(extract_answer(line["messages"][1]["content"]), line["meta"]["answer"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--task", "chess"], "unknown synthetic task 'chess'"),
        (["--difficulty", "0"], "difficulty 0 is out of range for arith (1-5)"),
        (["--task", "countdown", "--difficulty", "6"], "out of range for countdown (1-5)"),
        (["--n", "0"], "n must be >= 1"),
        (["--error-rate", "1.5"], "error_rate must be in [0, 1]"),
    ],
)
def test_bad_input_is_one_line(tmp_path, args, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "synth", "--out", str(tmp_path / "x.jsonl"), *args])
    error = str(exit_info.value.code)
    assert error.startswith("tts: error: ") and message in error and "\n" not in error


def test_training_problems_load_as_a_dataset_apart_from_the_eval_set():
    train = load_dataset("synth:arith:3:50:train")
    assert [p.id for p in train] == [make_problem("arith", 3, i).id for i in range(50)]
    assert all(p.metadata == {"task": "arith", "difficulty": 3} for p in train)
    assert not {p.problem for p in train} & {p.problem for p in load_dataset("synth:arith:3:200")}


@pytest.mark.parametrize(
    "spec", ["synth:chess:1", "synth:arith:9", "synth:arith", "synth:a:b", "synth:arith:3:5:test"]
)
def test_bad_dataset_specs_are_one_line(spec):
    with pytest.raises(TTSError) as error:
        load_dataset(spec)
    assert "\n" not in str(error.value)


def test_a_slip_pair_is_the_right_next_step_and_a_slipped_one_after_a_right_prefix():
    rng = random.Random(0)
    depths = set()
    for index in range(40):
        problem = make_problem("arith", 3, index)
        prefix, right, slipped = arith.slip_pair(rng, problem.instance)
        steps = arith.solution_steps(problem.instance)
        assert prefix == steps[: len(prefix)] and right == steps[len(prefix)]
        assert check_step(problem, prefix, right) and not check_step(problem, prefix, slipped)
        depths.add(len(prefix))
    assert depths == {0, 1, 2, 3}


DEAD_END = re.compile(r"Dead end at ([\d, ]+); back to ([\d, ]+)\.")


def numbers(text: str) -> list[int]:
    return sorted(int(n) for n in text.split(", "))


def checked_stream(problem) -> tuple[int, int]:
    """Check one search-style trace (see the test below); its stream's lines and dead ends."""
    start, target = list(problem.instance.numbers), problem.instance.target
    long_text, short = trace(problem, "search"), trace(problem, "path")
    stream = long_text.removeprefix("<think>\n").split("\n</think>\n\n")[0].split("\n\n")
    assert long_text.endswith(short)
    branch: list[str] = []  # the steps from the start to where the search stands
    pools = [sorted(start)]
    dead_ends = 0
    for line in stream:
        if dead := DEAD_END.fullmatch(line):
            assert numbers(dead.group(1)) == pools[-1], line
            assert not countdown._solvable(tuple(pools[-1]), target), line
            branch.pop()
            pools.pop()
            assert numbers(dead.group(2)) == pools[-1], line
            dead_ends += 1
            continue
        assert check_step(problem, branch, line), (branch, line)
        branch.append(line)
        pools.append(numbers(line.split(", leaving ")[1].removesuffix(".")))
    assert target in pools[-1]
    assert branch == short.split("\n\n")[:-1]  # the path style is the branch it ends on
    assert countdown.check_answer(problem.problem, extract_answer(short))
    assert math_equal(extract_answer(long_text), problem.answer)
    return len(stream), dead_ends


def test_a_search_stream_is_a_real_search_that_ends_in_its_path():
    """Every step of the stream is a valid step after the branch it extends; every named dead
    end is the pool the search stands at, has no solution, and is left for the pool above it;
    the path style is the stream's last branch; the answer reaches the target. A stream costs
    what its search did: without a dead end it is its path alone, and harder problems (more
    numbers, a wider range) take longer searches on average."""
    means = []
    for difficulty in (1, 2, 3):
        lengths, backtracked = [], 0
        for index in range(60):
            problem = make_problem("countdown", difficulty, index)
            length, dead_ends = checked_stream(problem)
            _, path = countdown.search(problem.instance)
            if dead_ends == 0:
                assert length == len(path)
            lengths.append(length)
            backtracked += dead_ends > 0
        assert 0.2 < backtracked / 60 < 0.9, (difficulty, backtracked)
        means.append(sum(lengths) / len(lengths))
    assert means[0] < means[1] < means[2], means


def test_the_search_styles_are_countdowns_and_data_synth_writes_them(tmp_path, capsys):
    with pytest.raises(TTSError, match="needs a task with a search"):
        trace(make_problem("arith", 2, 0), "search")
    out = tmp_path / "search.jsonl"
    main(
        ["data", "synth", "--task", "countdown", "--difficulty", "2", "--n", "4"]
        + ["--style", "search", "--out", str(out)]
    )
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 4 and all(r["meta"]["style"] == "search" for r in records)
    assert all(r["messages"][-1]["content"].startswith("<think>\n") for r in records)


def test_a_search_cost_cap_leaves_the_same_problems_out_of_every_style(tmp_path):
    written = {}
    for style in ("search", "path", "short"):
        out = tmp_path / f"{style}.jsonl"
        main(
            ["data", "synth", "--task", "countdown", "--difficulty", "2", "--n", "40"]
            + ["--style", style, "--max-search-lines", "20", "--out", str(out)]
        )
        written[style] = [json.loads(line) for line in out.read_text().splitlines()]
    ids = [r["meta"]["id"] for r in written["search"]]
    assert 0 < len(ids) < 40
    assert (
        ids
        == [r["meta"]["id"] for r in written["path"]]
        == [r["meta"]["id"] for r in written["short"]]
    )
    for record in written["search"]:
        stream = record["messages"][-1]["content"].split("\n</think>")[0].split("\n\n")
        assert len(stream) <= 20
    with pytest.raises(TTSError, match="max_search_lines needs a task with a search"):
        write_sft(tmp_path / "a.jsonl", "arith", 2, 4, "short", max_search_lines=20)
