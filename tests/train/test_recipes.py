"""Every recipe shipped under configs/recipes is a valid config of the loop that runs it, so
the commands the docs and the recipes' own comments give do not fail on a typo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tts.errors import TTSError
from tts.train import dpo, grpo, prm, sft, star

RECIPES = Path(__file__).parents[2] / "configs" / "recipes"
LOADERS = {  # recipe -> what `tts train LOOP` reads it with
    "builtin.yaml": sft.load_config,
    "builtin_prm.yaml": prm.load_config,
    "outcome_prm.yaml": prm.load_config,
    "checker_prm.yaml": prm.load_config,
    "checker_prm_4x.yaml": prm.load_config,
    "large_prm_backbone.yaml": sft.load_config,
    "large_prm.yaml": prm.load_config,
    "confident_prm.yaml": prm.load_config,
    "prm.yaml": prm.load_config,
    "grpo.yaml": grpo.load_config,
    "ppo.yaml": grpo.load_ppo_config,
    "prime.yaml": grpo.load_prime_config,
    "dpo.yaml": dpo.load_config,
    "star.yaml": star.load_config,
    "long_cot/sft_long.yaml": sft.load_config,
    "long_cot/sft_short.yaml": sft.load_config,
    "long_cot/grpo_short.yaml": grpo.load_config,
    "long_cot/grpo_long.yaml": grpo.load_config,
    "long_cot/grpo_long_cosine.yaml": grpo.load_config,
    "long_cot_countdown/sft_long.yaml": sft.load_config,
    "long_cot_countdown/sft_short.yaml": sft.load_config,
    "long_cot_countdown/grpo.yaml": grpo.load_config,
    "long_cot_countdown/grpo_cosine.yaml": grpo.load_config,
}


def test_every_recipe_is_listed_here():
    shipped = {str(path.relative_to(RECIPES)) for path in RECIPES.rglob("*.yaml")}
    assert shipped == set(LOADERS)


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_the_recipe_loads(name):
    config = LOADERS[name](RECIPES / name)
    assert config.out.parts[0] == "runs"  # outputs go to the ignored runs/ folder


def write_recipe(folder: Path, loop, **values) -> Path:
    """A recipe for `loop` with what it requires (tiny data it can read) plus `values`."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "data.jsonl"
    if loop is sft:
        messages = [{"role": "user", "content": "1 + 1?"}, {"role": "assistant", "content": "2"}]
        data.write_text(json.dumps({"messages": messages}) + "\n")
        values = {"data": str(data), "model": "builtin"} | values
    elif loop is prm:
        row = {"prompt": "1 + 1?", "completions": ["1 + 1 = 2"], "labels": [True]}
        data.write_text(json.dumps(row) + "\n")
        values = {"data": str(data)} | values
    else:
        values = {"dataset": "synth:arith:1:4", "eval_dataset": None} | values
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump({"out": str(folder / "out"), "max_steps": 1} | values))
    return path


@pytest.mark.parametrize("loop", [sft, prm, grpo], ids=["sft", "prm", "grpo"])
def test_a_min_lr_above_lr_is_refused_and_by_default_it_is_a_tenth_of_lr(loop, tmp_path):
    with pytest.raises(TTSError, match=r"min_lr \(0.01\) is above lr \(0.001\)"):
        loop.load_config(write_recipe(tmp_path, loop, lr=1e-3, min_lr=1e-2))
    assert loop.load_config(write_recipe(tmp_path, loop, lr=2e-5)).min_lr == pytest.approx(2e-6)
    assert loop.load_config(write_recipe(tmp_path, loop, lr=1e-3, min_lr=1e-3)).min_lr == 1e-3


@pytest.mark.parametrize("loop", [sft, prm, grpo], ids=["sft", "prm", "grpo"])
def test_every_loop_resolves_its_model_as_every_command_does(loop, tmp_path):
    train = {sft: sft.train_sft, prm: prm.train_prm, grpo: grpo.train_grpo}[loop]
    with pytest.raises(TTSError, match="^model folder not found: nowhere$"):
        train(loop.load_config(write_recipe(tmp_path, loop, model="nowhere")))
    no_tokenizer = tmp_path / "no-tokenizer"
    no_tokenizer.mkdir()
    (no_tokenizer / "config.json").write_text("{}")
    with pytest.raises(TTSError, match="has no tokenizer"):
        train(loop.load_config(write_recipe(tmp_path, loop, model=str(no_tokenizer))))


# Settings that only another loop reads: each loop's config refuses them by name rather than
# accepting and ignoring them.
NOT_READ = {
    sft: ["problem_draw", "eval_samples", "objective"],
    prm: ["problem_draw", "token_budget", "eval_max_tokens"],
    grpo: ["dtype", "grad_accum", "max_length", "log_every", "sampling"],
}


@pytest.mark.parametrize("loop", [sft, prm, grpo], ids=["sft", "prm", "grpo"])
def test_a_setting_the_loop_does_not_read_is_refused_by_name(loop, tmp_path):
    for field in NOT_READ[loop]:
        with pytest.raises(TTSError, match=f"{field}: Extra inputs are not permitted"):
            loop.load_config(write_recipe(tmp_path, loop, **{field: 1}))
