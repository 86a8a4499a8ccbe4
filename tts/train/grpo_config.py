"""The settings of one run of the RL loop (`tts train grpo`, `ppo` or `prime --recipe`), read by
every part of its step: the problem draw, the rollout, the advantages, the update and the loop.
The three commands are one loop; what differs is where advantages come from (`advantage`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from tts.engine import SamplingParams
from tts.prompts import DEFAULT_INSTRUCTION
from tts.seeds import derive_seed
from tts.train.gae import CriticConfig
from tts.train.grpo_rewards import RewardConfig
from tts.train.policy_loss import LossConfig
from tts.train.prime import ImplicitPRMConfig
from tts.train.process_rewards import ProcessRewardConfig
from tts.train.recipe import TrainConfig


class GRPOConfig(TrainConfig):
    """One run of the RL loop. `batch_size` is the micro-batch of sequences per forward of the
    update, unless `micro_batch_tokens` bounds micro-batches by padded tokens instead."""

    model: str = Field("builtin", description="causal LM folder to start from, or builtin")
    dataset: str = Field("synth:arith:3:2000:train", description="training problems")
    problem_draw: Literal["uniform", "curriculum", "failure"] = Field(
        "uniform", description="how training problems are drawn (curriculum needs pass rates)"
    )
    prompts_per_step: int = Field(16, ge=1, description="problems (groups) per step")
    group_size: int = Field(8, ge=2, description="completions per problem (G)")
    temperature: float = Field(1.0, gt=0, description="rollout temperature")
    top_p: float = Field(1.0, gt=0, le=1, description="rollout nucleus mass")
    max_tokens: int = Field(256, ge=1, description="rollout token budget")
    instruction: str = Field(DEFAULT_INSTRUCTION, description="appended to each problem")
    loss: LossConfig = Field(default_factory=LossConfig, description="policy loss")
    rewards: RewardConfig = Field(default_factory=RewardConfig, description="reward terms")
    advantage: Literal["group", "gae", "prime"] = Field(
        "group",
        description="group: group-relative, as loss.variant scales it (GRPO); gae: a critic's "
        "GAE over tokens (PPO; critic:, process_reward:); prime: PRIME's online implicit PRM "
        "(prime:)",
    )
    critic: CriticConfig | None = Field(
        None, description="advantage gae: the value model (default: its defaults)"
    )
    process_reward: ProcessRewardConfig | None = Field(
        None, description="advantage gae: a PRM's step scores as rewards (default: none)"
    )
    prime: ImplicitPRMConfig | None = Field(
        None, description="advantage prime: the implicit PRM (default: its defaults)"
    )
    dynamic_sampling: bool | None = Field(
        None,
        description="drop groups of equal rewards and draw more; default: the loss variant's "
        "(tts.train.policy_loss.VARIANTS)",
    )
    max_draws: int = Field(3, ge=1, description="draw rounds per step with dynamic sampling")
    epochs: int = Field(1, ge=1, description="optimizer steps over each step's rollouts")
    eval_dataset: str | None = Field("synth:arith:3", description="held-out pass@1 set")
    eval_limit: int = Field(100, ge=1, description="eval problems")
    eval_samples: int = Field(4, ge=1, description="samples per eval problem")
    eval_every: int = Field(25, ge=1, description="steps between evaluations")
    engine_blocks: int = Field(4096, ge=16, description="KV blocks of the rollout engine")
    release_engine_memory: bool | None = Field(
        None,
        description="free the rollout engine's KV cache during each update, which then has its "
        "memory (the engine shares the trainer's device); default: on an accelerator, not on CPU",
    )
    micro_batch_tokens: int | None = Field(
        None,
        ge=1,
        description="padded tokens per micro-batch of the update (a longer sequence goes "
        "alone); default: batch_size sequences per micro-batch",
    )
    activation_checkpointing: bool = Field(
        False, description="recompute activations in the backward pass: less memory, more time"
    )
    mixed_precision: bool | None = Field(
        None,
        description="under torchrun, compute in bfloat16 and reduce gradients in float32; "
        "default: where the device has bf16 (CUDA)",
    )

    rollout_workers: int = Field(
        0,
        ge=0,
        le=256,
        description="Ray actors that generate, each with its own engine (one CPU core or one GPU "
        "each); 0: the engine in the trainer's process",
    )
    rollout_backend: Literal["native", "vllm"] = Field(
        "native", description="the engine each rollout worker runs (vllm: where it is installed)"
    )
    rollout_engine: dict[str, Any] = Field(
        default_factory=dict,
        description="options of each worker's engine, as tts.engine.load takes them (native: "
        "block_size, kv_cache_gib, ...; vllm: enforce_eager, kv_cache_gib, ...); native's "
        "num_blocks defaults to engine_blocks",
    )
    ray_address: str | None = Field(
        None,
        description="the Ray cluster the rollout workers join (auto: the one this machine "
        "belongs to); default: a local Ray started for the run",
    )
    max_staleness: int = Field(
        0,
        ge=0,
        le=16,
        description="eta: how many versions behind the trained policy a sample's oldest token may "
        "be; the workers sample that far ahead of the trainer (0: the synchronous loop)",
    )
    partial_rollout_tokens: int | None = Field(
        None,
        ge=1,
        description="tokens a sample may take in one step; a longer one is paused and continued "
        "in the next step by the new weights (default: off)",
    )

    @model_validator(mode="after")
    def _defaults(self) -> GRPOConfig:
        if self.dynamic_sampling is None:
            self.dynamic_sampling = self.loss.rules.dynamic_sampling
        if self.advantage == "gae" and self.critic is None:
            self.critic = CriticConfig()
        if self.advantage == "prime" and self.prime is None:
            self.prime = ImplicitPRMConfig()
        for name, needs in (("critic", "gae"), ("process_reward", "gae"), ("prime", "prime")):
            if getattr(self, name) is not None and self.advantage != needs:
                raise ValueError(
                    f"{name} is read with advantage: {needs} only (this run: "
                    f"advantage: {self.advantage})"
                )
        asynchronous = self.max_staleness > 0 or self.partial_rollout_tokens is not None
        if asynchronous and self.rollout_workers == 0:
            raise ValueError(
                "max_staleness and partial_rollout_tokens need rollout_workers >= 1: the "
                "workers sample while the trainer updates"
            )
        if (self.rollout_backend != "native" or self.rollout_engine) and not self.rollout_workers:
            raise ValueError(
                "rollout_backend and rollout_engine set the rollout workers' engines: they need "
                "rollout_workers >= 1 (the in-process engine is native, sized by engine_blocks)"
            )
        if self.partial_rollout_tokens is not None and self.max_staleness == 0:
            raise ValueError(
                "partial_rollout_tokens needs max_staleness >= 1: a continued sample holds "
                "tokens of the previous version"
            )
        if self.max_staleness > 0 and self.temperature != 1.0:
            raise ValueError(
                "max_staleness > 0 needs temperature 1: the decoupled loss weighs each token by "
                "the sampling policy's probability, which the engine reports untempered"
            )
        return self

    @property
    def lag(self) -> int:
        """How many versions behind the trained one the workers start new samples: eta, or
        eta - 1 with partial rollouts, so that a sample continued once is still fresh enough."""
        return self.max_staleness - (self.partial_rollout_tokens is not None)

    def sampling_params(self, n: int, *seed_parts: object) -> SamplingParams:
        """`n` samples at the rollout settings, seeded by the run seed and `seed_parts`."""
        return SamplingParams(
            n=n,
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=self.max_tokens,
            seed=derive_seed(self.seed, *seed_parts),
        )


class PPOConfig(GRPOConfig):
    """`tts train ppo`: the RL loop with a critic (advantage gae)."""

    advantage: Literal["gae"] = Field("gae", description="gae: a critic's GAE over tokens")


class PRIMEConfig(GRPOConfig):
    """`tts train prime`: the RL loop with PRIME's online implicit PRM (advantage prime)."""

    advantage: Literal["prime"] = Field("prime", description="prime: the online implicit PRM")
