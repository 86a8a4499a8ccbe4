"""`tts data reject|difficulty|shepherd|pairs` end to end: the real command, the built-in model
(or a tiny random one with a tiny PRM) through the native engine, real files, a real local Ray."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import orjson
import pytest

from tts.cli import main
from tts.data.datasets import load_dataset
from tts.data.filters import jaccard, normalized, shingles
from tts.data.job import progress_path
from tts.data.jsonl import read_records
from tts.data.shepherd import agreement
from tts.errors import TTSError
from tts.train.prm import read_stepwise
from tts.verifiers import extract_answer, math_equal

ARITH = ["--dataset", "synth:arith:3", "--max-tokens", "160", "--temperature", "1.0"]


def run(capsys: pytest.CaptureFixture, *args: str) -> str:
    main(["data", *args])
    return capsys.readouterr().out


def stats(out: Path) -> list[dict]:
    """The per-problem statistics of a finished job (its progress file after the header)."""
    return [entry["stats"] for entry in read_records(progress_path(out))[1:]]


def record_id(record: dict) -> str:
    return record["id"] if "id" in record else record["meta"]["id"]


def problem_of(record: dict) -> str:
    return record["id"] if "problem" in record else record["meta"]["problem_id"]


def by_id(out: Path) -> dict[str, dict]:
    records = read_records(out)
    keyed = {record_id(r): r for r in records}
    assert len(keyed) == len(records), "a record was written twice"
    return keyed


def gold_answers(limit: int) -> dict[str, str]:
    return {p.id: p.answer for p in load_dataset("synth:arith:3", limit)}


def test_reject_keeps_only_verified_distinct_completions_and_counts_add_up(tmp_path, capsys):
    out = tmp_path / "sft.jsonl"
    printed = run(
        capsys, "reject", *ARITH, "--limit", "6", "--n", "8", "--keep", "2", "--out", str(out)
    )
    gold = gold_answers(6)
    kept = read_records(out)
    assert kept, "the built-in model solves some arith:3 problems"
    texts = defaultdict(list)
    for record in kept:
        user, assistant = record["messages"]
        assert user["role"] == "user" and user["content"].startswith("Evaluate ")
        assert assistant["role"] == "assistant"
        meta = record["meta"]
        assert math_equal(extract_answer(assistant["content"]), gold[meta["problem_id"]])
        assert meta["gold"] == gold[meta["problem_id"]] and meta["model"] == "builtin"
        assert meta["strategy"] == "majority" and meta["tokens"] > 0
        texts[meta["problem_id"]].append(assistant["content"])
    for group in texts.values():
        assert len(group) <= 2
        assert len({normalized(t) for t in group}) == len(group)
        for a, b in itertools.combinations(group, 2):
            assert jaccard(shingles(a), shingles(b)) < 0.8
    per_problem = stats(out)
    assert len(per_problem) == 6
    for s in per_problem:
        assert sum(s["removed"].values()) + s["kept"] == s["sampled"] == 8
    assert sum(s["kept"] for s in per_problem) == len(kept)
    # The model writes one procedure, so most correct samples repeat one another.
    assert sum(s["removed"]["duplicate"] for s in per_problem) > 0
    pass_rate = {r["meta"]["problem_id"]: r["meta"]["pass_rate"] for r in kept}
    for entry in read_records(progress_path(out))[1:]:
        if entry["problem_id"] in pass_rate:
            assert pass_rate[entry["problem_id"]] == entry["stats"]["correct"] / 8
    assert "sampled" in printed and "48" in printed and "duplicate" in printed


def test_reject_think_filter_removes_answers_without_a_think_block(tmp_path, capsys):
    out = tmp_path / "sft.jsonl"
    printed = run(
        capsys, "reject", *ARITH, "--limit", "3", "--n", "4", "--think", "--out", str(out)
    )
    per_problem = stats(out)
    assert read_records(out) == [] and all(s["kept"] == 0 for s in per_problem)
    assert sum(s["removed"]["no_think"] for s in per_problem) > 0  # it never writes <think>
    assert all(sum(s["removed"].values()) == s["sampled"] for s in per_problem)
    assert "no_think" in printed


def test_reject_takes_a_guided_strategys_candidates(tmp_path, capsys, tiny_prm_token, tiny_llama):
    beam = ["--strategy", "beam", "-o", "beam_width=2", "--n", "4", "--prm", str(tiny_prm_token)]
    out = tmp_path / "beam.jsonl"
    run(capsys, "reject", *ARITH, "--limit", "3", *beam, "--out", str(out))
    gold = gold_answers(3)
    kept = read_records(out)
    assert kept
    for record in kept:
        text = record["messages"][-1]["content"]
        assert math_equal(extract_answer(text), gold[record["meta"]["problem_id"]])
        assert record["meta"]["strategy"].startswith("beam[beam_width=2,prm=")
    assert all(sum(s["removed"].values()) + s["kept"] == s["sampled"] for s in stats(out))

    # A random model writes no answers, but every candidate is still accounted for.
    out = tmp_path / "random.jsonl"
    random_model = ["--model", str(tiny_llama), "--dataset", "gsm8k", "--max-tokens", "12"]
    run(capsys, "reject", *random_model, "--limit", "2", *beam, "--out", str(out))
    per_problem = stats(out)
    assert len(per_problem) == 2 and all(s["sampled"] > 0 for s in per_problem)
    assert all(sum(s["removed"].values()) + s["kept"] == s["sampled"] for s in per_problem)
    assert len(read_records(out)) == sum(s["kept"] for s in per_problem)


def test_difficulty_writes_a_dataset_that_loads_back_with_the_rejection_pass_rates(
    tmp_path, capsys
):
    out = tmp_path / "rated.jsonl"
    printed = run(capsys, "difficulty", *ARITH, "--limit", "6", "--n", "8", "--out", str(out))
    rated = load_dataset(str(out))
    assert [p.id for p in rated] != [] and {p.id for p in rated} == set(gold_answers(6))
    for problem in rated:
        assert problem.metadata["samples"] == 8
        assert problem.metadata["pass_rate"] == problem.metadata["correct"] / 8
        assert problem.metadata["task"] == "arith"  # the source's own fields are kept
    # The same seed and settings sample the same candidates as `tts data reject`.
    sft = tmp_path / "sft.jsonl"
    run(capsys, "reject", *ARITH, "--limit", "6", "--n", "8", "--out", str(sft))
    rates = {p.id: p.metadata["pass_rate"] for p in rated}
    for record in read_records(sft):
        assert record["meta"]["pass_rate"] == rates[record["meta"]["problem_id"]]
    assert "problems by pass rate" in printed

    middle = tmp_path / "middle.jsonl"
    limits = ["--min-pass-rate", "0.01", "--max-pass-rate", "0.99"]
    printed = run(
        capsys, "difficulty", *ARITH, "--limit", "6", "--n", "8", *limits, "--out", str(middle)
    )
    expected = {i for i, rate in rates.items() if 0.01 <= rate <= 0.99}
    assert {p["id"] for p in read_records(middle)} == expected
    assert f"dropped outside [0.01, 0.99]: {6 - len(expected)}" in printed


def test_pairs_put_the_shortest_correct_against_a_wrong_or_longer_one(tmp_path, capsys):
    out = tmp_path / "pairs.jsonl"
    run(capsys, "pairs", *ARITH, "--limit", "6", "--n", "8", "--out", str(out))
    gold = gold_answers(6)
    pairs = read_records(out)
    assert pairs
    for pair in pairs:
        assert pair["prompt"][0]["role"] == "user"
        chosen, rejected = pair["chosen"][0]["content"], pair["rejected"][0]["content"]
        meta = pair["meta"]
        assert math_equal(extract_answer(chosen), gold[meta["problem_id"]])
        rejected_ok = extract_answer(rejected) is not None and math_equal(
            extract_answer(rejected), gold[meta["problem_id"]]
        )
        assert rejected_ok == meta["rejected_correct"] and chosen != rejected
        if rejected_ok:
            assert meta["rejected_tokens"] >= 1.5 * meta["chosen_tokens"]
    assert sum(s["pairs"] for s in stats(out)) == len(pairs)


def test_shepherd_labels_follow_the_step_checker_and_reuse_the_prefix_cache(tmp_path, capsys):
    out = tmp_path / "labels.jsonl"
    args = ["shepherd", *ARITH, "--limit", "8", "--n", "2", "--k", "8", "--out", str(out)]
    printed = run(capsys, *args)
    records = read_records(out)
    assert records
    for record in records:
        steps, labels, scores = record["completions"], record["labels"], record["scores"]
        assert isinstance(record["prompt"], str) and all(isinstance(s, str) for s in steps)
        assert len(steps) == len(labels) == len(scores) == len(record["meta"]["checker"])
        assert labels[-1] == record["meta"]["correct"]
        assert all(label == (score > 0) for label, score in zip(labels, scores))
        assert all(0 <= score <= 1 for score in scores)
    counts = agreement(records)
    wrong = counts["wrong_hard_wrong"] + counts["wrong_hard_right"]
    right = counts["right_hard_wrong"] + counts["right_hard_right"]
    assert wrong >= 5 and right >= 5, counts
    wrong_caught = counts["wrong_hard_wrong"] / wrong
    right_flagged = counts["right_hard_wrong"] / right
    assert wrong_caught >= 0.6 and wrong_caught > 3 * right_flagged, counts
    per_problem = stats(out)
    cached = sum(s["cached_tokens"] for s in per_problem)
    assert cached > 0.8 * sum(s["prompt_tokens"] for s in per_problem)
    assert "prefix cache:" in printed and "agreement with the task's step checker" in printed


def test_binary_estimation_finds_the_first_bad_step_full_estimation_finds_for_less(
    tmp_path, capsys
):
    """Both modes draw a step's completions from the same seed, so wherever full estimation's
    labels are monotone (good steps, then bad ones) the binary search must land on the same
    first bad step, having sampled fewer tokens to find it."""
    common = ["shepherd", *ARITH, "--limit", "6", "--n", "3", "--k", "4"]
    full, binary = tmp_path / "full.jsonl", tmp_path / "binary.jsonl"
    run(capsys, *common, "--out", str(full))
    printed = run(capsys, *common, "--estimation", "binary", "--out", str(binary))
    full_records, binary_records = by_id(full), by_id(binary)
    assert full_records.keys() == binary_records.keys()
    monotone = 0
    for key, record in binary_records.items():
        labels = record["labels"]
        assert "scores" not in record and len(labels) == len(record["completions"])
        assert labels == sorted(labels, reverse=True), "good steps, then bad ones"
        if record["meta"]["correct"]:
            assert all(labels)
        full_labels = full_records[key]["labels"]
        if full_labels == sorted(full_labels, reverse=True):
            monotone += 1
            assert labels == full_labels, key
    assert monotone >= len(binary_records) // 2
    assert any(not all(r["labels"]) for r in binary_records.values())
    spent = {path: sum(s["completion_tokens"] for s in stats(path)) for path in (full, binary)}
    assert spent[binary] < 0.6 * spent[full], spent
    assert "binary search for the first bad step" in printed
    with pytest.raises(TTSError, match="no soft scores"):
        read_stepwise(binary, "soft")


def test_outcome_estimation_labels_only_the_last_step_and_samples_no_completions(tmp_path, capsys):
    out = tmp_path / "outcome.jsonl"
    common = ["shepherd", *ARITH, "--limit", "6", "--n", "3", "--k", "4", "--out", str(out)]
    printed = run(capsys, *common, "--estimation", "outcome")
    records = read_records(out)
    assert records and any(r["meta"]["correct"] for r in records)
    for record in records:
        labels = record["labels"]
        assert labels[:-1] == [None] * (len(labels) - 1)
        assert labels[-1] == record["meta"]["correct"] and "scores" not in record
    assert sum(s["completion_tokens"] for s in stats(out)) == 0  # no step completions
    assert "outcome labels" in printed and "agreement with" not in printed
    rows = read_stepwise(out, "hard")
    assert all(targets[-1] in (0.0, 1.0) and targets[0] is None for *_, targets in rows)


def test_checker_estimation_labels_every_step_by_the_task_and_needs_one(tmp_path, capsys):
    out = tmp_path / "checker.jsonl"
    common = ["shepherd", *ARITH, "--limit", "6", "--n", "3", "--out", str(out)]
    printed = run(capsys, *common, "--estimation", "checker")
    records = read_records(out)
    assert records and any(not all(r["meta"]["checker"]) for r in records)
    for record in records:
        # Intermediate steps by the checker; the last, as in every mode, by the answer.
        labels, meta = record["labels"], record["meta"]
        assert labels[:-1] == meta["checker"][:-1] and labels[-1] == meta["correct"]
        assert "scores" not in record
    assert sum(s["completion_tokens"] for s in stats(out)) == 0
    assert "the task's step checker" in printed and "agreement with" not in printed
    gsm8k = ["shepherd", "--dataset", "gsm8k", "--limit", "1", "--estimation", "checker"]
    error = one_line_error([*gsm8k, "--out", str(tmp_path / "gsm8k.jsonl")])
    assert "--estimation checker needs a synthetic task's step checker" in error


KILLED = {
    "reject": ["--n", "6", "--limit", "12"],
    "difficulty": ["--n", "6", "--limit", "12"],
    "pairs": ["--n", "6", "--limit", "12"],
    "shepherd": ["--n", "2", "--k", "4", "--limit", "8"],
}


@pytest.mark.parametrize("kind", KILLED)
def test_a_killed_job_resumes_to_the_same_records(kind, tmp_path, capsys):
    args = [kind, *ARITH, *KILLED[kind], "--concurrency", "1"]
    limit = int(args[args.index("--limit") + 1])
    whole = tmp_path / "whole.jsonl"
    run(capsys, *args, "--out", str(whole))

    killed = tmp_path / "killed.jsonl"
    victim = subprocess.Popen(
        [sys.executable, "-m", "tts.cli", "data", *args, "--out", str(killed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "TQDM_DISABLE": "1"},
        start_new_session=True,
    )
    ledger = progress_path(killed)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and victim.poll() is None:
        if ledger.exists() and ledger.read_bytes().count(b"\n") >= 4:
            break
        time.sleep(0.01)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.communicate()
    finished = {entry["problem_id"] for entry in read_records(ledger)[1:]}
    assert 3 <= len(finished) < limit, "the run should have been stopped halfway"
    # As if the kill had landed after a problem's records but before its progress line, in the
    # middle of writing the next record.
    unfinished = [r for r in read_records(whole) if problem_of(r) not in finished]
    with killed.open("ab") as handle:
        handle.write(b"".join(orjson.dumps(r) + b"\n" for r in unfinished[:1]) + b'{"me')

    run(capsys, *args, "--out", str(killed))
    assert by_id(killed) == by_id(whole)
    assert len(stats(killed)) == limit


def test_two_ray_actors_write_the_same_records_as_one_process(tmp_path, capsys):
    args = ["reject", *ARITH, "--limit", "8", "--n", "6"]
    local, sharded = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    run(capsys, *args, "--out", str(local))
    printed = run(
        capsys, *args, "--ray", "--actors", "2", "--concurrency", "2", "--out", str(sharded)
    )
    assert by_id(sharded) == by_id(local)
    assert len(stats(sharded)) == 8 and "sampled" in printed


def one_line_error(args: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(["data", *args])
    error = str(exit_info.value.code)
    assert error.startswith("tts: error: ") and "\n" not in error
    return error


def test_bad_input_is_a_one_line_error(tmp_path, capsys):
    out = ["--out", str(tmp_path / "o.jsonl")]
    assert "n: Input should be greater than or equal to 1" in one_line_error(
        ["reject", "--n", "0", *out]
    )
    assert "unknown strategy 'beem'" in one_line_error(["reject", "--strategy", "beem", *out])
    assert "unknown dataset 'nope'" in one_line_error(["pairs", "--dataset", "nope", *out])
    assert "min_pass_rate 0.9 is above max_pass_rate 0.1" in one_line_error(
        ["difficulty", "--min-pass-rate", "0.9", "--max-pass-rate", "0.1", *out]
    )
    assert "model folder not found" in one_line_error(["shepherd", "--model", "/no/model", *out])
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text('{"messages": []}\n')
    assert "holds records but no foreign.progress.jsonl" in one_line_error(
        ["reject", *ARITH, "--limit", "1", "--out", str(foreign)]
    )


def test_a_failed_start_pins_nothing_and_other_settings_are_refused(tmp_path, capsys):
    out = tmp_path / "o.jsonl"
    args = ["difficulty", *ARITH, "--limit", "2", "--n", "2", "--out", str(out)]
    one_line_error([*args, "--model", str(tmp_path / "typo")])
    run(capsys, *args)  # the corrected command runs
    assert len(read_records(out)) == 2
    error = one_line_error([*args, "--n", "3"])
    assert "written with other settings (n)" in error
    assert "job 'difficulty'" in one_line_error(["reject", *args[1:]])
