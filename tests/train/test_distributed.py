"""GRPO under torchrun on CPU (gloo, FSDP2): the 2-rank update equals the 1-process update on
the same global batch, micro-batches by token budget change nothing but the packing, and
`torchrun --nproc_per_node 2 -m tts.cli train grpo` writes its files once and resumes after a
kill of the whole job."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from transformers import AutoModelForCausalLM, AutoTokenizer

from tts.train.critic import Critic
from tts.train.distributed import Ranks, full_weights, leave, shard
from tts.train.grpo_config import GRPOConfig
from tts.train.online_prm import OnlinePRM
from tts.train.policy_update import micro_batches, update
from tts.train.rollout import Rollout, share_groups

from .resume import assert_same_weights, grpo_recipe, training_log


def fixed_rollout(vocab: int, count: int = 7) -> Rollout:
    """`count` sequences of mixed lengths with fixed advantages (seeded)."""
    rng = random.Random(0)
    batch = Rollout()
    for _ in range(count):
        prompt = rng.randint(3, 6)
        batch.sequences.append([rng.randrange(vocab) for _ in range(prompt + rng.randint(2, 14))])
        batch.starts.append(prompt)
        batch.advantages.append(rng.uniform(-1.5, 1.5))
    return batch


def share(batch: Rollout, ranks: Ranks) -> Rollout:
    return Rollout(
        sequences=ranks.share(batch.sequences),
        starts=ranks.share(batch.starts),
        advantages=ranks.share(batch.advantages),
    )


def one_update(folder: Path, config: GRPOConfig, ranks: Ranks) -> tuple[dict, dict]:
    """The weights and stats after one SGD step of the policy loss on this rank's share of
    `fixed_rollout` (SGD: the step is the gradient itself, so any difference shows)."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model = shard(model, ranks, torch.device("cpu"), False, None)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    batch = share(fixed_rollout(model.config.vocab_size), ranks)
    stats = update(model, None, optimizer, batch, 0, config, ranks)
    return {k: v.clone() for k, v in full_weights(model, ranks).items()}, stats


def rank_main(rank: int, world: int, store: str, folder: Path, config: GRPOConfig, out: Path):
    dist.init_process_group("gloo", init_method=store, rank=rank, world_size=world)
    weights, stats = one_update(folder, config, Ranks(rank, world, joined=True))
    if rank == 0:
        torch.save((weights, stats), out)
    leave(Ranks(rank, world, joined=True))  # a barrier first: no rank tears down gloo early


@pytest.mark.parametrize(
    ("family", "variant", "micro_batch_tokens"),
    [("tiny_qwen", "grpo", None), ("tiny_llama", "dapo", 40)],
)
def test_two_ranks_update_equals_one_process_update(
    family, variant, micro_batch_tokens, request, tmp_path
):
    folder = request.getfixturevalue(family)  # qwen2 ties its output embedding, llama does not
    config = GRPOConfig(
        out=tmp_path,
        batch_size=2,
        grad_clip=5.0,
        max_tokens=16,
        loss={"variant": variant},
        micro_batch_tokens=micro_batch_tokens,
    )
    alone, alone_stats = one_update(folder, config, Ranks())
    start = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).state_dict()
    store, out = f"file://{tmp_path / 'store'}", tmp_path / "two.pt"
    mp.spawn(rank_main, args=(2, store, folder, config, out), nprocs=2)
    shared, shared_stats = torch.load(out, weights_only=False)
    assert shared.keys() == alone.keys()
    moved = max(float((alone[k] - start[k]).abs().max()) for k in alone)
    gap = max(float((alone[k] - shared[k]).abs().max()) for k in alone)
    assert moved > 1e-3 and gap < 1e-5, (moved, gap)
    for key in ("loss", "entropy", "clip_fraction", "grad_norm"):
        assert shared_stats[key] == pytest.approx(alone_stats[key], rel=1e-5, abs=1e-7), key


def side_step(folder: Path, config: GRPOConfig, ranks: Ranks) -> tuple[list, dict, dict]:
    """The per-token advantages (every rank's, in batch order), the side model's weights and
    the statistics after one step of `config.advantage`'s side model (the critic: advantages
    then its update; PRIME's PRM: one forward that scores and trains it) on this rank's
    groups of a fixed batch of two completions per problem."""
    torch.manual_seed(0)
    batch = fixed_rollout(AutoModelForCausalLM.from_pretrained(folder).config.vocab_size, 8)
    batch.rewards = [1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0]
    batch.parts = {"accuracy": list(batch.rewards)}
    batch = share_groups(batch, ranks, config.group_size)
    side_class = Critic if config.advantage == "gae" else OnlinePRM
    extra = (AutoTokenizer.from_pretrained(folder),) if side_class is Critic else ()
    side = side_class(config, ranks, torch.device("cpu"), None, *extra)
    stats = side.advantages(batch, 0, config, 0)
    if side_class is Critic:
        stats |= side.update(batch, 0, config, 0)
    advantages = [row for part in ranks.gather(batch.token_advantages) for row in part]
    weights = {k: v.clone() for k, v in full_weights(side.side.model, ranks).items()}
    return advantages, weights, stats


def side_configs(folder: Path, out: Path) -> list[GRPOConfig]:
    """A critic's and PRIME's run on `folder`'s model, whose side models move by about 1e-2."""
    return [
        GRPOConfig(
            out=out,
            model=str(folder),
            batch_size=2,
            group_size=2,
            max_tokens=16,
            advantage=advantage,
            lr=1e-3,
            warmup_steps=0,
            **{"critic" if advantage == "gae" else "prime": {"lr": 1e-2}},
        )
        for advantage in ("gae", "prime")
    ]


def side_rank_main(rank, world, store, folder, out):
    dist.init_process_group("gloo", init_method=store, rank=rank, world_size=world)
    ranks = Ranks(rank, world, joined=True)
    results = [side_step(folder, config, ranks) for config in side_configs(folder, out.parent)]
    if rank == 0:
        torch.save(results, out)
    leave(ranks)


def test_two_ranks_train_the_critic_and_primes_prm_as_one_process(tiny_qwen, tmp_path):
    """Whitening and the side model's loss cover every rank's tokens: two ranks, each with half
    the groups, give the one-process advantages, weights and statistics (the critic's, then
    PRIME's PRM's)."""
    start = AutoModelForCausalLM.from_pretrained(tiny_qwen).state_dict()
    store, out = f"file://{tmp_path / 'store'}", tmp_path / "two.pt"
    mp.spawn(side_rank_main, args=(2, store, tiny_qwen, out), nprocs=2)
    two_ranks = torch.load(out, weights_only=False)
    for config, shared_result in zip(side_configs(tiny_qwen, tmp_path), two_ranks):
        alone, alone_weights, alone_stats = side_step(tiny_qwen, config, Ranks())
        shared, shared_weights, shared_stats = shared_result
        # Rank 0 holds groups 0 and 2, rank 1 groups 1 and 3: back into batch order.
        order = [0, 1, 4, 5, 2, 3, 6, 7]
        shared = [shared[order.index(i)] for i in range(8)]
        for one, two in zip(alone, shared):
            assert two == pytest.approx(one, abs=1e-5)
        gap = max(float((alone_weights[k] - shared_weights[k]).abs().max()) for k in alone_weights)
        moved = max(
            float((alone_weights[k] - start[k]).abs().max()) for k in start if k in alone_weights
        )
        assert moved > 1e-3 and gap < 1e-5, (config.advantage, moved, gap)
        for key, value in alone_stats.items():
            assert shared_stats[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


def test_micro_batches_hold_at_most_the_token_budget_and_default_to_batch_size(tmp_path):
    lengths = [9, 3, 30, 4, 8, 8]
    by_count = micro_batches(lengths, GRPOConfig(out=tmp_path, batch_size=4))
    assert by_count == [[1, 3, 4, 5], [0, 2]]
    by_tokens = micro_batches(lengths, GRPOConfig(out=tmp_path, micro_batch_tokens=24))
    assert by_tokens == [[1, 3, 4], [5, 0], [2]]  # 3 x 8, 2 x 9, and 30 alone
    for micro in by_tokens[:-1]:
        assert len(micro) * max(lengths[i] for i in micro) <= 24


def test_token_budget_micro_batches_give_the_same_update(tiny_qwen, tmp_path):
    by_count, _ = one_update(tiny_qwen, GRPOConfig(out=tmp_path, batch_size=7), Ranks())
    by_tokens, _ = one_update(tiny_qwen, GRPOConfig(out=tmp_path, micro_batch_tokens=30), Ranks())
    assert max(float((by_count[k] - by_tokens[k]).abs().max()) for k in by_count) < 1e-6


def torchrun(recipe: Path) -> subprocess.Popen:
    """`torchrun --nproc_per_node 2 -m tts.cli train grpo --recipe RECIPE`, its output in
    RECIPE's folder (a pipe could fill and stall it)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", "2", "-m", "tts.cli", "train", "grpo", "--recipe", str(recipe)]
    return subprocess.Popen(
        command,
        env={**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"},
        start_new_session=True,
        stdout=(recipe.parent / "output.txt").open("ab"),
        stderr=subprocess.STDOUT,
    )


def kill_job(launcher: subprocess.Popen) -> None:
    """SIGKILL the launcher and its ranks (torchrun starts each rank in a session of its own)."""
    ranks = [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit()
        and (entry / "stat").exists()
        and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == launcher.pid
    ]
    for pid in [launcher.pid, *ranks]:
        os.kill(pid, signal.SIGKILL)
    launcher.wait()


def job_recipe(folder: Path) -> Path:
    return grpo_recipe(
        folder,
        dataset="synth:arith:1:40:train",
        group_size=2,
        max_tokens=48,
        max_steps=2,
        batch_size=4,
        save_every=1,
        eval_dataset="synth:arith:1:4",
        eval_samples=1,
    )


def test_torchrun_job_writes_once_and_resumes_after_a_kill(tmp_path):
    whole = torchrun(job_recipe(tmp_path / "a"))
    assert whole.wait(timeout=300) == 0, (tmp_path / "a" / "output.txt").read_text()[-3000:]
    log = training_log(tmp_path / "a")
    assert [r["step"] for r in log if "reward" in r] == [1, 2]  # rank 0 alone writes
    assert [r["step"] for r in log if "eval_pass@1" in r] == [0, 2]
    assert (tmp_path / "a" / "out" / "final" / "model.safetensors").is_file()

    recipe = job_recipe(tmp_path / "b")
    killed = torchrun(recipe)
    state = tmp_path / "b" / "out" / "checkpoint" / "trainer_state.pt"
    deadline = time.monotonic() + 300
    while not state.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    kill_job(killed)
    resumed = torchrun(recipe)
    assert resumed.wait(timeout=300) == 0, (tmp_path / "b" / "output.txt").read_text()[-3000:]
    log = training_log(tmp_path / "b")
    assert [r["step"] for r in log if "reward" in r] == [1, 2]
    assert_same_weights(tmp_path / "a" / "out" / "final", tmp_path / "b" / "out" / "final")
