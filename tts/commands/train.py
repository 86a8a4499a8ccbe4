"""`tts train`: the training loops, each from a YAML recipe with flags over it, and `plot`."""

from __future__ import annotations

import argparse
import importlib
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from tts.commands.config_flags import Flag, add_config_flags, config_values
from tts.train.curves import plot_log
from tts.train.recipe import read_yaml


@dataclass(frozen=True)
class Loop:
    """A training command: the module with its config class, `load_config(path, **overrides)`
    and entry point, and what the command does."""

    module: str
    config: str
    train: str
    help: str
    description: str
    load: str = "load_config"  # the module's function that reads the recipe


LOOPS = {
    "sft": Loop(
        "tts.train.sft",
        "SFTConfig",
        "train_sft",
        "supervised fine-tuning on chat data (the SFT format)",
        "Train with a YAML recipe (see configs/recipes/).",
    ),
    "prm": Loop(
        "tts.train.prm",
        "PRMConfig",
        "train_prm",
        "a process reward model from stepwise labels (tts data shepherd)",
        "Train a token-classification or implicit PRM with a YAML recipe (see "
        "configs/recipes/prm.yaml); OUT/final loads as --prm.",
    ),
    "grpo": Loop(
        "tts.train.grpo",
        "GRPOConfig",
        "train_grpo",
        "reinforcement learning with verifiable rewards (GRPO, Dr. GRPO, DAPO)",
        "Train with GRPO from a YAML recipe (see configs/recipes/grpo.yaml): rollouts by the "
        "native engine in process (or on Ray rollout workers, --rollout-workers N, "
        "asynchronous with --max-staleness), rule rewards, group-relative advantages; "
        "OUT/log.jsonl per step (tts train plot draws it), OUT/final at the end. Under torchrun "
        "the model is sharded over the ranks (FSDP2).",
    ),
    "ppo": Loop(
        "tts.train.grpo",
        "PPOConfig",
        "train_grpo",
        "PPO with a critic: GAE over tokens, outcome and process (PRM) rewards",
        "Train with PPO from a YAML recipe (see configs/recipes/ppo.yaml): GRPO's loop and "
        "placements with a value model trained beside the policy (critic:), per-token GAE "
        "advantages, and optionally a PRM's step scores as rewards on each step's last token "
        "(process_reward:).",
        load="load_ppo_config",
    ),
    "prime": Loop(
        "tts.train.grpo",
        "PRIMEConfig",
        "train_grpo",
        "PRIME: an implicit PRM updated online from outcomes, its token rewards as advantages",
        "Train with PRIME from a YAML recipe (see configs/recipes/prime.yaml): GRPO's loop and "
        "placements with an implicit PRM trained each step on the rollouts' outcome labels "
        "(prime:); OUT/final_prm loads as --prm.",
        load="load_prime_config",
    ),
    "star": Loop(
        "tts.train.star",
        "STaRConfig",
        "train_star",
        "STaR: sample, keep the right rationales (rationalise the rest), fine-tune; iterate",
        "Run STaR's iterations from a YAML recipe (see configs/recipes/star.yaml): each samples "
        "rationales with the previous iteration's model (tts data rationales) and fine-tunes "
        "the base model on them (tts train sft); OUT/iteration_K keeps each one's data and "
        "model, OUT/log.jsonl its held-out pass@1.",
    ),
    "dpo": Loop(
        "tts.train.dpo",
        "DPOConfig",
        "train_dpo",
        "preference optimisation on chosen/rejected pairs (DPO, IPO; tts data pairs)",
        "Train with DPO or IPO from a YAML recipe (see configs/recipes/dpo.yaml) on preference "
        "pairs in TRL's format; on tts data pairs output this is Kimi's long2short. The "
        "reference log-probabilities are computed once and cached in OUT.",
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    loops = parser.add_subparsers(dest="loop", required=True)
    for name, loop in LOOPS.items():
        command = loops.add_parser(
            name,
            help=loop.help,
            description=f"{loop.description} Flags override the recipe; its nested settings "
            "are set there. Running the same command again resumes where it stopped.",
            add_arguments=partial(add_loop_flags, loop),
        )
        command.add_argument(
            "--recipe", type=Path, required=True, metavar="FILE", help="YAML recipe"
        )
        command.set_defaults(run=partial(run_loop, loop))
    plot = loops.add_parser(
        "plot",
        help="draw a training log's metrics against steps",
        description="Draw metrics of OUT/log.jsonl (any loop's) against steps, one panel each.",
    )
    plot.add_argument("log", type=Path, help="a log.jsonl, or the run folder holding it")
    plot.add_argument(
        "--metrics",
        help="comma-separated keys of the log (default: whichever of reward, accuracy, "
        "length_mean, loss and the eval metrics it has)",
    )
    plot.add_argument("--out", type=Path, help="PNG to write (default: beside the log)")
    plot.set_defaults(run=run_plot)


def add_loop_flags(loop: Loop, parser: argparse.ArgumentParser) -> None:
    config = getattr(importlib.import_module(loop.module), loop.config)  # torch
    # SFT's `init`, the sizes of a new model, comes from a YAML file of its own.
    init = Flag(type=read_yaml, metavar="SIZES.yaml")
    add_config_flags(parser, config, {"init": init}, overriding="the recipe")


def run_loop(loop: Loop, args: argparse.Namespace) -> None:
    module = importlib.import_module(loop.module)
    overrides = config_values(getattr(module, loop.config), args)
    config = getattr(module, loop.load)(args.recipe, **overrides)
    result = getattr(module, loop.train)(config)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 alone reports
        return
    if not isinstance(result, dict):
        print(result)
        return
    for key, value in result.items():
        print(f"{key}: {value}")


def run_plot(args: argparse.Namespace) -> None:
    print(plot_log(args.log, args.metrics.split(",") if args.metrics else None, args.out))
