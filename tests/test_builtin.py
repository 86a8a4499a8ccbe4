"""The built-in model: present, small, an ordinary Qwen2 folder, and able to do its task."""

from __future__ import annotations

import asyncio
import json

from tts.data.datasets import load_dataset
from tts.engine import BUILTIN, load, resolve_model
from tts.search import make_strategy
from tts.verifiers import math_equal


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
