"""How a strategy prompts: a problem posed once with its instruction, never twice, and a
caller's own prompt used exactly as given."""

from __future__ import annotations

import asyncio
import json

import pytest
from transformers import AutoTokenizer

from tests.search.toy import ToyBackend, ToyScorer
from tts.data.synthetic import write_sft
from tts.models.builtin import BUILTIN
from tts.prompts import DEFAULT_INSTRUCTION, build_prompt
from tts.search import make_strategy


def test_a_problem_that_ends_with_the_instruction_does_not_get_it_twice(tmp_path):
    # The format `tts data synth` and `tts data reject` write, sent back as a problem.
    write_sft(tmp_path / "sft.jsonl", "arith", 2, n=3, style="short")
    tokenizer = AutoTokenizer.from_pretrained(BUILTIN)
    for line in (tmp_path / "sft.jsonl").read_text().splitlines():
        posed = json.loads(line)["messages"][0]["content"]
        bare = posed.removesuffix(f"\n{DEFAULT_INSTRUCTION}")
        assert bare != posed
        prompt = build_prompt(tokenizer, posed)
        assert prompt == build_prompt(tokenizer, bare) and prompt.count(DEFAULT_INSTRUCTION) == 1


@pytest.mark.parametrize("name", ["majority", "beam"])
def test_a_given_prompt_is_sent_as_it_is(name):
    prompt = "System: be brief.\nQuestion: 2+2?\nAnswer:"
    backend = ToyBackend({(): ["The answer is \\boxed{4}"]})
    strategy = (
        make_strategy(name, n=2, beam_width=1) if name == "beam" else make_strategy(name, n=2)
    )
    result = asyncio.run(strategy.solve("2+2?", backend, ToyScorer({}), prompt=prompt))
    assert backend.prompts and all(p.startswith(prompt) for p in backend.prompts)
    assert DEFAULT_INSTRUCTION not in "".join(backend.prompts)
    assert result.answer == "4"
