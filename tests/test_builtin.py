"""The built-in model and PRM: present, small, ordinary Hugging Face folders, and able to do
their tasks."""

from __future__ import annotations

import asyncio
import json

from tts.cli import main
from tts.data.datasets import load_dataset
from tts.data.jsonl import read_records
from tts.data.synthetic import arith
from tts.engine import load
from tts.models.builtin import BUILTIN, BUILTIN_PRM, resolve_model
from tts.search import make_strategy
from tts.verifiers import load_scorer, math_equal


def test_builtin_is_a_small_qwen2_folder_with_a_card():
    assert resolve_model("builtin") == BUILTIN
    config = json.loads((BUILTIN / "config.json").read_text())
    assert config["model_type"] == "qwen2"
    assert (BUILTIN / "model.safetensors").stat().st_size < 20 * 2**20
    assert "pass@1" in (BUILTIN / "README.md").read_text()


def test_builtin_solves_easy_arithmetic_greedily():
    # Its card measures 0.94 per sample at temperature 1 on difficulty 1: greedy should be
    # right almost always. A regression guard against shipping a broken model.
    backend = load("builtin", device="cpu", num_blocks=512)
    greedy = make_strategy("majority", n=1, temperature=0, max_tokens=128)
    problems = load_dataset("synth:arith:1:20")

    async def solve_all():
        return await asyncio.gather(*(greedy.solve(p.problem, backend) for p in problems))

    results = asyncio.run(solve_all())
    right = sum(math_equal(r.answer or "", p.answer) for r, p in zip(results, problems))
    assert right >= 18


def test_builtin_prm_is_a_small_implicit_prm_over_the_builtin_model_with_a_card():
    config = json.loads((BUILTIN_PRM / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForCausalLM"]
    settings = json.loads((BUILTIN_PRM / "prm_config.json").read_text())
    assert settings["format"] == "implicit_prm" and settings["reference"] == "builtin"
    assert (BUILTIN_PRM / "model.safetensors").stat().st_size < 10 * 2**20
    assert "AUROC" in (BUILTIN_PRM / "README.md").read_text()
    eval_report = json.loads((BUILTIN_PRM / "eval.json").read_text())
    assert eval_report["eval_sibling_accuracy"] > 0.6 and 0.5 < eval_report["eval_auroc"] <= 1


def test_builtin_prm_loads_by_name_and_scores_every_step():
    scorer = load_scorer("builtin", device="cpu")
    problem = load_dataset("synth:arith:3:1")[0]
    expression = arith.parse_expression(problem.problem.removeprefix("Evaluate ")[:-1])
    steps = [*arith.solution_steps(expression), f"The answer is \\boxed{{{problem.answer}}}."]
    scores = asyncio.run(scorer.score(problem.problem, steps))
    assert len(scores) == len(steps) and all(0 < s < 1 for s in scores)


def test_search_without_a_prm_scores_with_the_builtin_one(tmp_path, capsys):
    args = ["bench", "--dataset", "synth:arith:2", "--limit", "2", "--strategy", "beam"]
    main([*args, "--n", "4", "--max-tokens", "128", "--out", str(tmp_path)])
    records = read_records(tmp_path / "results.jsonl")
    assert {r["strategy"] for r in records} == {"beam[prm=builtin]"}
    assert all(r["usage"]["scorer_calls"] > 0 for r in records)
