"""`tts train prime`: the PRM's loss and PRIME's advantages on hand-computed cases, the first
step's implicit rewards and update on real rollouts of the built-in model, and a run that
resumes after a kill and leaves a PRM that `--prm` loads."""

from __future__ import annotations

import asyncio
import math

import pytest
import torch
from transformers import AutoTokenizer

from tts.cli import main
from tts.data.datasets import load_dataset
from tts.engine import load
from tts.models.builtin import resolve_model
from tts.train.distributed import ONE_PROCESS
from tts.train.draw import ProblemDraw
from tts.train.grpo import load_config, train_grpo
from tts.train.logprobs import token_logprobs
from tts.train.online_prm import OnlinePRM
from tts.train.prime import leave_one_out, prime_returns, prm_loss
from tts.train.rollout import rollout
from tts.verifiers.prm import load_scorer

from .resume import assert_same_weights, grpo_recipe, kill_after_a_checkpoint, training_log


def test_prm_loss_by_hand():
    # beta * sums = (1, -0.5) against labels (1, 0): -log sigmoid(1), -log(1 - sigmoid(-0.5)).
    loss = prm_loss(torch.tensor([2.0, -1.0]), torch.tensor([1.0, 0.0]), beta=0.5)
    expected = (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(-0.5))) / 2
    assert loss.item() == pytest.approx(expected)


def test_prime_advantages_by_hand():
    assert leave_one_out(torch.tensor([[1.0, 0.0, 0.0, 1.0]]))[0].tolist() == pytest.approx(
        [2 / 3, -2 / 3, -2 / 3, 2 / 3]
    )
    # One group of two: token rewards (0.2, 0.4) and (-0.1), outcomes 1 and 0. Each token's
    # process reward less the other completion's mean token reward, summed from it to the end,
    # plus the outcome less the other's.
    returns = prime_returns(
        [torch.tensor([0.2, 0.4]), torch.tensor([-0.1])], [1.0, 0.0], 2, process_weight=1.0
    )
    assert returns[0].tolist() == pytest.approx([(0.3 + 0.5) + 1, 0.5 + 1])
    assert returns[1].tolist() == pytest.approx([-0.4 - 1])
    weighted = prime_returns(
        [torch.tensor([0.2, 0.4]), torch.tensor([-0.1])], [1.0, 0.0], 2, process_weight=0.5
    )
    assert weighted[1].tolist() == pytest.approx([-0.2 - 1])


def test_the_first_step_scores_with_the_untouched_prm_then_moves_it_towards_the_outcomes(
    tmp_path,
):
    """The PRM starts as the reference, so the first step's implicit rewards are 0 and each
    completion's advantage is its whitened leave-one-out outcome on every token; the step's
    update then raises the implicit outcome reward of the right completions above the wrong
    ones' and lowers the PRM's loss on them."""
    config = load_config(
        grpo_recipe(tmp_path, advantage="prime", prime={"lr": 1e-4, "beta": 0.5}, warmup_steps=0)
    )
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("builtin"))
    backend = load("builtin", "native", device="cpu")
    draw = ProblemDraw(load_dataset(config.dataset), config)
    batch = rollout(backend, tokenizer, draw, config, step=0)
    correct = torch.tensor(batch.parts["accuracy"]) > 0
    assert correct.any() and not correct.all()
    prm = OnlinePRM(config, ONE_PROCESS, torch.device("cpu"), None)
    pad = tokenizer.pad_token_id
    stats = prm.advantages(batch, pad, config, step=0)
    assert stats["implicit_reward"] == 0.0 and stats["prm_loss"] == pytest.approx(math.log(2))
    firsts = torch.tensor([row[0] for row in batch.token_advantages])
    assert all(row == pytest.approx([row[0]] * len(row)) for row in batch.token_advantages)
    outcome = leave_one_out(torch.tensor(batch.rewards).view(-1, config.group_size)).flatten()
    ranks = torch.argsort(firsts)
    assert torch.equal(torch.argsort(outcome.float()[ranks]), torch.arange(len(ranks)))

    with torch.no_grad():
        policy, mask, _ = token_logprobs(prm.side.model, batch.sequences, batch.starts, pad, 1.0)
        start, _, _ = token_logprobs(prm.reference, batch.sequences, batch.starts, pad, 1.0)
    implicit = config.prime.beta * ((policy - start) * mask).sum(dim=1)
    assert implicit[correct].mean() > implicit[~correct].mean()
    assert prm_loss(implicit, correct.float(), beta=1.0) < math.log(2)


def test_prime_trains_resumes_after_a_kill_and_leaves_a_prm(tmp_path, capsys):
    settings = {"prime": {"lr": 1e-4}, "max_steps": 3, "eval_dataset": None}
    main(["train", "prime", "--recipe", str(grpo_recipe(tmp_path / "a", **settings))])
    assert "final:" in capsys.readouterr().out
    steps = [r for r in training_log(tmp_path / "a") if "reward" in r]
    for key in ("prm_loss", "prm_accuracy", "implicit_reward", "loss"):
        assert all(key in r for r in steps), key
    killed = grpo_recipe(tmp_path / "b", advantage="prime", **settings)
    out = killed.parent / "out"
    stopped_at = kill_after_a_checkpoint("tts.train.grpo", "train_grpo", killed, out)
    assert stopped_at == 2
    train_grpo(load_config(killed))
    assert_same_weights(tmp_path / "a" / "out" / "final", out / "final")
    assert_same_weights(tmp_path / "a" / "out" / "final_prm", out / "final_prm")
    scorer = load_scorer(out / "final_prm", device="cpu")
    scores = asyncio.run(scorer.score("What is 2 + 3?", ["2 + 3 = 5.", "The answer is 5."]))
    assert len(scores) == 2 and all(0 < s < 1 for s in scores)
