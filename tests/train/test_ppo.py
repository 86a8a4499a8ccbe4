"""`tts train ppo`: GAE, the value loss and process rewards on hand-computed cases, the built-in
PRM's step scores on the tokens that end the steps, and a run of the built-in model with a
critic and process rewards that resumes after a kill."""

from __future__ import annotations

import asyncio

import pytest
import torch
from transformers import AutoTokenizer

from tts.cli import main
from tts.errors import TTSError
from tts.models.builtin import resolve_model
from tts.train.gae import explained_variance, gae, value_loss, whiten
from tts.train.grpo import load_config, load_ppo_config, train_grpo
from tts.train.process_rewards import ProcessRewardConfig, ProcessRewards, shaped, step_ends

from .resume import assert_same_weights, grpo_recipe, kill_after_a_checkpoint, training_log

SOLUTION = "Step one: 2 + 3 = 5.\n\nStep two: 5 * 2 = 10.\n\nThe answer is \\boxed{10}."


def test_gae_by_hand():
    # Row 0: a prompt column, then three completion tokens. Row 1: two tokens, then padding
    # whose value (7) must not leak into the tokens before it.
    values = torch.tensor([[9.0, 0.5, 0.2, -0.1], [1.0, 2.0, 7.0, 7.0]])
    rewards = torch.tensor([[5.0, 0.0, 0.3, 1.0], [0.0, 0.5, 3.0, 0.0]])
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 0, 0]])
    advantages, returns = gae(rewards, values, mask, gamma=0.9, lam=0.5)
    # Row 0: delta = (-0.32, 0.01, 1.1); A_t = delta_t + 0.45 A_{t+1}.
    expected = torch.tensor([[0.0, -0.09275, 0.505, 1.1], [0.125, -1.5, 0.0, 0.0]])
    assert torch.allclose(advantages, expected, atol=1e-6)
    assert torch.allclose(returns, (expected + values) * mask, atol=1e-6)
    # lambda = gamma = 1: the return is the sum of the rewards still to come.
    _, returns = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    assert torch.allclose(returns[0, 1:], torch.tensor([1.3, 1.3, 1.0]))


def test_value_loss_whitening_and_explained_variance_by_hand():
    values, old = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, 0.5]])
    returns, mask = torch.tensor([[2.0, 0.0]]), torch.ones(1, 2)
    loss, clip_fraction = value_loss(values, old, returns, mask, clip=0.2)
    # Clipped values 0.7 and 0.3: errors 1.69 and 0.09 beat the unclipped 1 and 0.
    assert loss.item() == pytest.approx(0.5 * (1.69 + 0.09) / 2)
    assert clip_fraction == 1.0
    white = whiten(torch.tensor([1.0, 2.0, 3.0, 6.0]))
    assert white.mean().item() == pytest.approx(0, abs=1e-6)
    assert white.pow(2).mean().item() == pytest.approx(1, abs=1e-6)
    target = torch.tensor([1.0, 2.0, 3.0])
    assert explained_variance(target, target) == pytest.approx(1.0)
    assert explained_variance(torch.full((3,), 2.0), target) == pytest.approx(0.0)


def test_step_rewards_are_shaped_by_hand():
    scores = [0.8, 0.3, 0.6]
    assert shaped(scores, 2.0, "score") == pytest.approx([1.6, 0.6, 1.2])
    # delta: the change from the score before (1/2 before the first step).
    assert shaped(scores, 2.0, "delta") == pytest.approx([0.6, -1.0, 0.6])


def test_each_step_ends_on_the_token_that_completes_its_text():
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("builtin"))
    tokens = tokenizer.encode(SOLUTION) + [tokenizer.eos_token_id]
    steps, ends = step_ends(tokenizer, tokens, "\n\n")
    assert steps == SOLUTION.split("\n\n")
    for step, end in zip(steps, ends):
        text = tokenizer.decode(tokens[: end + 1], skip_special_tokens=True)
        before = tokenizer.decode(tokens[:end], skip_special_tokens=True)
        assert text.rstrip("\n").endswith(step) and not before.rstrip("\n").endswith(step)
    assert ends[-1] == len(tokens) - 2  # the last text token, before the end-of-sequence token


def test_the_builtin_prms_step_scores_land_on_each_steps_last_token():
    """With values 0 and gamma = lambda = 1 the advantage of a token is the sum of the rewards
    from it on, so it changes exactly after the tokens that end a step, by that step's reward:
    the PRM's score change (delta) or score, as `scorer.score` gives them."""
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("builtin"))
    tokens = tokenizer.encode(SOLUTION) + [tokenizer.eos_token_id]
    problem = "What is (2 + 3) * 2?"
    process = ProcessRewards(ProcessRewardConfig(weight=2.0), tokenizer, "cpu")
    [rewards] = process.token_rewards([problem], [tokens])
    steps, ends = step_ends(tokenizer, tokens, "\n\n")
    scores = asyncio.run(process.scorer.score(problem, steps))
    # In min form (the built-in PRM's) a step that does not lower the minimum scores as the one
    # before it, so its delta is 0: off the steps' ends every reward is 0.
    assert all(r == 0 for i, r in enumerate(rewards) if i not in ends)
    assert [rewards[i] for i in ends] == pytest.approx(shaped(scores, 2.0, "delta"))
    assert sum(rewards) == pytest.approx(2.0 * (scores[-1] - 0.5))
    outcome = torch.zeros(len(tokens))
    outcome[-1] = 1.0
    token_rewards = torch.tensor([rewards]) + outcome
    mask = torch.ones(1, len(tokens))
    advantages, _ = gae(token_rewards, torch.zeros(1, len(tokens)), mask, 1.0, 1.0)
    drops = advantages[0, :-1] - advantages[0, 1:]
    assert torch.allclose(drops, torch.tensor(rewards[:-1]), atol=1e-6)
    score = ProcessRewards(ProcessRewardConfig(shaping="score"), tokenizer, "cpu")
    [plain] = score.token_rewards([problem], [tokens])
    assert [i for i, r in enumerate(plain) if r != 0] == ends
    assert [plain[i] for i in ends] == pytest.approx(scores)


def ppo_recipe(folder, **overrides):
    values = {"advantage": "gae", "critic": {"lr": 1e-3}, "process_reward": {"prm": "builtin"}}
    return grpo_recipe(folder, **(values | overrides))


def test_ppo_with_process_rewards_trains_logs_and_resumes_after_a_kill(tmp_path, capsys):
    main(["train", "ppo", "--recipe", str(ppo_recipe(tmp_path / "a"))])
    assert "final:" in capsys.readouterr().out
    steps = [r for r in training_log(tmp_path / "a") if "reward" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    for key in ("value_loss", "value_mean", "explained_variance", "process_reward", "loss"):
        assert all(key in r for r in steps), key
    # The critic learns: its loss on the same kind of batch falls from its first steps.
    assert steps[-1]["value_loss"] < steps[0]["value_loss"]

    killed = ppo_recipe(tmp_path / "b")
    out = killed.parent / "out"
    stopped_at = kill_after_a_checkpoint("tts.train.grpo", "train_grpo", killed, out)
    assert 2 <= stopped_at < 4
    # Resumed with the critic re-initialised, the advantages and so the weights would differ.
    train_grpo(load_config(killed))
    assert_same_weights(tmp_path / "a" / "out" / "final", out / "final")
    keys = ("step", "reward", "value_loss", "process_reward", "eval_pass@1")

    def logged(folder):
        return [r.get(key, 0.0) for r in training_log(folder) for key in keys]

    assert logged(tmp_path / "b") == pytest.approx(logged(tmp_path / "a"), rel=1e-4)


def test_ppo_settings_are_refused_where_nothing_reads_them(tmp_path):
    with pytest.raises(TTSError, match="critic is read with advantage: gae only"):
        load_config(grpo_recipe(tmp_path, critic={"lr": 1e-3}))
    with pytest.raises(TTSError, match="process_reward is read with advantage: gae only"):
        load_config(grpo_recipe(tmp_path, process_reward={"prm": "builtin"}))
    with pytest.raises(TTSError, match="advantage"):
        load_ppo_config(grpo_recipe(tmp_path, advantage="group"))
    assert load_ppo_config(grpo_recipe(tmp_path)).critic.lam == 1.0
