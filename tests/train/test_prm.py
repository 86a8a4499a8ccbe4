"""`tts train prm` end to end on the built-in model's backbone: stepwise labels made from the
synthetic task (right steps, and a slipped step with everything after it labelled wrong), real
checkpoints, a kill and a resume, and the result loaded back as a search scorer."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.train.resume import assert_same_weights, kill_after_a_checkpoint, training_log
from tts.cli import main
from tts.data.synthetic import arith, make_problem
from tts.errors import TTSError
from tts.prompts import build_prompt
from tts.train.prm import load_config, train_prm
from tts.train.prm_metrics import auroc, sibling_pairs
from tts.verifiers import load_scorer


@pytest.fixture(scope="module")
def labels(tmp_path_factory) -> Path:
    """60 solutions of 30 problems: one right throughout, one with a slipped step and all after
    it wrong."""
    rng = random.Random(0)
    lines = []
    for i in range(60):
        problem = make_problem("arith", 3, i // 2)
        steps = arith.solution_steps(problem.instance)
        good = [True] * (len(steps) + 1)
        if i % 2:
            j = rng.randrange(len(steps))
            expression = problem.instance
            for _ in range(j):
                expression = expression.reduce()[-1]
            steps[j] = arith.wrong_step(rng, expression)
            good = [k < j for k in range(len(steps) + 1)]
        steps.append(f"The answer is \\boxed{{{problem.answer if not i % 2 else 0}}}.")
        record = {
            "prompt": problem.problem,
            "completions": steps,
            "labels": good,
            "scores": [0.9 if g else 0.1 for g in good],
            "meta": {"problem_id": problem.id},
        }
        lines.append(json.dumps(record))
    path = tmp_path_factory.mktemp("prm") / "labels.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def recipe(folder: Path, data: Path, **overrides) -> Path:
    values = {"data": str(data), "out": str(folder / "out"), "max_steps": 12, "batch_size": 8}
    values |= {"lr": 1e-3, "warmup_steps": 2, "save_every": 3, "log_every": 1}
    values |= {"eval_share": 0.3, "eval_every": 6}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(values | overrides))
    return path


def test_auroc_counts_ties_half_and_needs_both_classes():
    labels = np.array([True, True, False, False])
    assert auroc(labels, np.array([0.9, 0.8, 0.2, 0.1])) == 1.0
    assert auroc(labels, np.array([0.1, 0.2, 0.8, 0.9])) == 0.0
    assert auroc(labels, np.array([0.5, 0.5, 0.5, 0.5])) == 0.5
    assert auroc(labels, np.array([0.9, 0.4, 0.4, 0.1])) == 0.875
    assert np.isnan(auroc(np.array([True, True]), np.array([0.1, 0.2])))


def test_sibling_pairs_are_the_first_steps_where_a_good_and_a_bad_solution_part():
    rows = [
        ("p", ["a", "b", "c"], [1.0, 1.0, 1.0]),
        ("p", ["a", "x", "y"], [1.0, 0.0, 0.0]),  # parts from the first at step 1
        ("p", ["a", "b", "z"], [1.0, 1.0, 1.0]),  # parts from the first, both good: no pair
        ("q", ["a", "x", "y"], [1.0, 1.0, 0.0]),  # another problem: never paired with p's
        ("q", ["a", "w"], [1.0, 0.0]),  # parts from the one above at step 1
        ("q", ["a", "x"], [1.0, 0.0]),  # the same steps as row 3 as far as it goes: no pair
    ]
    assert sorted(sibling_pairs(rows)) == [(0, 1, 1), (2, 1, 1), (3, 4, 1)]


def test_training_learns_and_the_result_loads_as_a_scorer(tmp_path, labels, capsys):
    main(["train", "prm", "--recipe", str(recipe(tmp_path, labels, max_steps=30))])
    printed = dict(line.split(": ", 1) for line in capsys.readouterr().out.strip().splitlines())
    final = Path(printed["final"])
    report = json.loads((final / "eval.json").read_text())
    assert report["eval_steps"] > 0 and 0.3 < report["train_good_share"] < 0.9
    assert 0 <= report["eval_auroc"] <= 1 and float(printed["eval_auroc"]) == report["eval_auroc"]
    assert report["eval_sibling_pairs"] > 0 and 0 <= report["eval_sibling_accuracy"] <= 1
    losses = [r["loss"] for r in training_log(tmp_path) if "loss" in r]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    assert any("eval_auroc" in r for r in training_log(tmp_path))
    scorer = load_scorer(final, device="cpu")
    problem = make_problem("arith", 3, 0)
    steps = arith.solution_steps(problem.instance)
    scores = asyncio.run(scorer.score(problem.problem, steps))
    assert len(scores) == len(steps) and all(0 < s < 1 for s in scores)


def test_soft_targets_train_on_the_scores(tmp_path, labels):
    result = train_prm(load_config(recipe(tmp_path, labels, targets="soft", max_steps=3)))
    assert Path(result["final"], "prm_config.json").exists()
    no_scores = tmp_path / "no_scores.jsonl"
    rows = [json.loads(line) for line in labels.read_text().splitlines()]
    no_scores.write_text("".join(json.dumps({**r, "scores": None}) + "\n" for r in rows))
    with pytest.raises(TTSError, match="line 1: expected prompt, completions .* one scores"):
        train_prm(load_config(recipe(tmp_path / "b", no_scores, targets="soft")))


def test_policy_input_trains_and_scores_on_the_text_the_policy_wrote(tmp_path, labels):
    result = train_prm(load_config(recipe(tmp_path, labels, input="policy", max_steps=3)))
    scorer = load_scorer(result["final"], device="cpu")
    problem = make_problem("arith", 3, 0)
    steps = arith.solution_steps(problem.instance)
    ids, positions, start = scorer.encode(problem.problem, steps)
    policy_text = build_prompt(scorer.tokenizer, problem.problem) + "".join(
        step + "\n\n" for step in steps
    )
    assert scorer.tokenizer.decode(ids) == policy_text
    assert scorer.tokenizer.decode(ids[:start]) == build_prompt(scorer.tokenizer, problem.problem)
    assert ids == scorer.tokenizer(policy_text, add_special_tokens=False)["input_ids"]
    # The built-in tokenizer writes a step's end as one token, as the policy generates it.
    assert {scorer.tokenizer.decode([ids[p]]) for p in positions} == {".\n\n"}
    assert len(asyncio.run(scorer.score(problem.problem, steps))) == len(steps)


def test_implicit_prm_trains_resumes_and_loads_against_its_reference(tmp_path, labels):
    implicit = {"objective": "implicit", "input": "policy", "beta": 1.0, "lr": 1e-4, "min_lr": 0}
    result = train_prm(load_config(recipe(tmp_path / "a", labels, **implicit)))
    final = Path(result["final"])
    settings = json.loads((final / "prm_config.json").read_text())
    assert settings["format"] == "implicit_prm" and settings["reference"] == "builtin"
    losses = [r["loss"] for r in training_log(tmp_path / "a") if "loss" in r]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    scorer = load_scorer(final, device="cpu")
    problem = make_problem("arith", 3, 0)
    steps = arith.solution_steps(problem.instance)
    scores = asyncio.run(scorer.score(problem.problem, steps))
    assert len(scores) == len(steps) and all(0 < s < 1 for s in scores)
    assert max(scores) - min(scores) > 1e-3
    # Against itself the ratio is 0 everywhere: the reference really is the starting model.
    still = recipe(tmp_path / "b", labels, **{**implicit, "max_steps": 1, "lr": 1e-12})
    scorer = load_scorer(train_prm(load_config(still))["final"], device="cpu")
    assert asyncio.run(scorer.score(problem.problem, steps)) == pytest.approx([0.5] * len(steps))
    killed = recipe(tmp_path / "c", labels, **implicit)
    stopped_at = kill_after_a_checkpoint(
        "tts.train.prm", "train_prm", killed, tmp_path / "c" / "out"
    )
    assert 3 <= stopped_at < 12
    train_prm(load_config(killed))
    assert_same_weights(final, tmp_path / "c" / "out" / "final")


def test_a_min_form_implicit_prm_trains_and_scores_no_step_above_an_earlier_one(tmp_path, labels):
    implicit = {"objective": "implicit", "input": "policy", "beta": 1.0, "value": "min"}
    result = train_prm(load_config(recipe(tmp_path, labels, **implicit, lr=1e-4, min_lr=0)))
    settings = json.loads((Path(result["final"]) / "prm_config.json").read_text())
    assert settings["value"] == "min"
    losses = [r["loss"] for r in training_log(tmp_path) if "loss" in r]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    problem = make_problem("arith", 3, 0)
    steps = arith.solution_steps(problem.instance)
    scores = asyncio.run(load_scorer(result["final"], device="cpu").score(problem.problem, steps))
    assert all(later <= earlier for earlier, later in zip(scores, scores[1:]))
    assert max(scores) - min(scores) > 1e-3


def test_outcome_labels_train_at_the_last_step_only(tmp_path, labels):
    outcome = tmp_path / "outcome.jsonl"
    lines = []
    for line in labels.read_text().splitlines():
        record = json.loads(line)
        record["labels"] = [None] * (len(record["labels"]) - 1) + record["labels"][-1:]
        lines.append(json.dumps(record))
    outcome.write_text("\n".join(lines) + "\n")
    implicit = {"objective": "implicit", "input": "policy", "beta": 1.0, "lr": 1e-4}
    result = train_prm(load_config(recipe(tmp_path, outcome, **implicit)))
    assert result["train_steps"] == result["train_solutions"]  # one labelled step each
    losses = [r["loss"] for r in training_log(tmp_path) if "loss" in r]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])


def test_killed_training_resumes_to_the_same_weights(tmp_path, labels):
    train_prm(load_config(recipe(tmp_path / "a", labels)))
    killed_recipe = recipe(tmp_path / "b", labels)
    stopped_at = kill_after_a_checkpoint(
        "tts.train.prm", "train_prm", killed_recipe, tmp_path / "b" / "out"
    )
    assert 3 <= stopped_at < 12
    train_prm(load_config(killed_recipe))
    assert_same_weights(tmp_path / "a" / "out" / "final", tmp_path / "b" / "out" / "final")
    steps = [r["step"] for r in training_log(tmp_path / "b") if "loss" in r]
    assert steps == list(range(1, 13))  # no step logged twice


def test_bad_input_is_named(tmp_path, labels):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "completions": ["a", "b"], "labels": [true]}\n')
    with pytest.raises(TTSError, match="bad.jsonl, line 1: expected prompt"):
        train_prm(load_config(recipe(tmp_path, bad)))
    bad.write_text('{"prompt": "p", "completions": ["a", "b"], "labels": [null, null]}\n')
    with pytest.raises(TTSError, match="bad.jsonl, line 1: .* at least one is not null"):
        train_prm(load_config(recipe(tmp_path, bad)))
    with pytest.raises(TTSError, match="implicit scores the policy's own text; set input: policy"):
        load_config(recipe(tmp_path, labels, objective="implicit"))
    with pytest.raises(TTSError, match="eval_share"):
        load_config(recipe(tmp_path, labels, eval_share=1.5))
    with pytest.raises(TTSError, match="model folder not found"):
        train_prm(load_config(recipe(tmp_path / "c", labels, model="/no/model")))
