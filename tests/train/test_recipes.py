"""Every recipe shipped under configs/recipes is a valid config of the loop that runs it, so
the commands the README and the recipes' own comments give do not fail on a typo."""

from __future__ import annotations

from pathlib import Path

import pytest

from tts.train import grpo, prm, sft

RECIPES = Path(__file__).parents[2] / "configs" / "recipes"
LOOPS = {
    "builtin.yaml": sft,
    "builtin_prm.yaml": prm,
    "prm.yaml": prm,
    "grpo.yaml": grpo,
    "long_cot/sft_long.yaml": sft,
    "long_cot/sft_short.yaml": sft,
    "long_cot/grpo_short.yaml": grpo,
    "long_cot/grpo_long.yaml": grpo,
    "long_cot/grpo_long_cosine.yaml": grpo,
}


def test_every_recipe_is_listed_here():
    shipped = {str(path.relative_to(RECIPES)) for path in RECIPES.rglob("*.yaml")}
    assert shipped == set(LOOPS)


@pytest.mark.parametrize("name", sorted(LOOPS))
def test_the_recipe_loads(name):
    config = LOOPS[name].load_config(RECIPES / name)
    assert config.out.parts[0] == "runs"  # outputs go to the ignored runs/ folder
