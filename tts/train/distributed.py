"""The trainer's ranks under `torchrun`: the process group, the model sharded by FSDP2, and the
collectives a GRPO step needs so that its update and its log do not depend on the rank count.

Without torchrun (no `WORLD_SIZE` in the environment) there is one rank and every function here
is the identity: no process group, no wrapper, the model trained as it always was. Under
torchrun each rank joins the group torchrun describes (nccl on CUDA, gloo on CPU) and the model
is wrapped by `fully_shard` (PyTorch's FSDP2), one unit per decoder layer and one for the rest.
FSDP2 runs on CPU with gloo in torch 2.13 (forward, backward, clipping, AdamW and full state
dicts; checked on a tiny model), so CPU and GPU take the same path. The one gloo limit met:
FSDP2's gradient divide factor (PREMUL_SUM) is not in gloo, so gradients are averaged over the
ranks as FSDP2 does by default and the loop scales each rank's loss by the rank count instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import (
    MixedPrecisionPolicy,
    fully_shard,
    register_fsdp_forward_method,
)
from torch.distributed.tensor import DTensor
from transformers import PreTrainedModel

from tts.devices import resolve_device
from tts.errors import TTSError

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass(frozen=True)
class Ranks:
    """This process's place among the trainer's ranks; `joined` is false in a one-process run
    (no torchrun), where every collective is the identity."""

    rank: int = 0
    world: int = 1
    joined: bool = False

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes the log, checkpoints and the final folder."""
        return self.rank == 0

    def share(self, items: list[Item]) -> list[Item]:
        """This rank's part of `items`, dealt round-robin (all of them on one rank)."""
        return items[self.rank :: self.world]

    def sum(self, values: list[float]) -> list[float]:
        """Each value summed over the ranks (float64)."""
        if not self.joined:
            return values
        tensor = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def max(self, value: float) -> float:
        """The largest `value` of any rank."""
        if not self.joined:
            return value
        tensor = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return float(tensor)

    def gather(self, value: Item) -> list[Item]:
        """Every rank's `value` (picklable), in rank order."""
        if not self.joined:
            return [value]
        values: list[Any] = [None] * self.world
        dist.all_gather_object(values, value)
        return values

    def broadcast(self, value: Item) -> Item:
        """Rank 0's `value` (picklable) on every rank; what the others pass is ignored."""
        if not self.joined:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def main_first(self, work: Callable[..., Result], *args: object) -> Result:
        """`work(*args)` on rank 0, then on the others: for work that may repair files (a
        checkpoint swap cut short) which two ranks must not repair at once."""
        if self.main:
            result = work(*args)
        self.barrier()
        if not self.main:
            result = work(*args)
        return result

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.joined:
            dist.barrier()


# A run without torchrun: one rank, no process group.
ONE_PROCESS = Ranks()


def join(device: str | None) -> tuple[Ranks, torch.device]:
    """Join torchrun's process group (nccl on CUDA, gloo on CPU) if this process was started
    by torchrun, and the device this rank trains on (on CUDA, the GPU of its local rank)."""
    resolved = resolve_device(device)
    if "WORLD_SIZE" not in os.environ:
        return Ranks(), resolved
    if resolved.type == "cuda" and resolved.index is None:
        resolved = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(resolved)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if resolved.type == "cuda" else "gloo")
    return Ranks(dist.get_rank(), dist.get_world_size(), joined=True), resolved


def leave(ranks: Ranks) -> None:
    """Leave the process group once every rank is done."""
    if ranks.joined:
        dist.barrier()
        dist.destroy_process_group()


def shard(
    model: PreTrainedModel,
    ranks: Ranks,
    device: torch.device,
    activation_checkpointing: bool,
    mixed_precision: bool | None,
) -> PreTrainedModel:
    """`model` ready to train: activations recomputed in the backward pass if asked (memory for
    time), and under torchrun wrapped by `fully_shard`, one unit per decoder layer (the classes
    the model names in `_no_split_modules`) and one for the rest. Mixed precision computes in
    bfloat16 and reduces gradients in float32, the parameters kept in float32; by default
    (None) on where the device computes bfloat16 natively (CUDA with bf16), never in a
    one-process run."""
    if activation_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if not ranks.joined:
        return model
    if mixed_precision is None:
        mixed_precision = device.type == "cuda" and torch.cuda.is_bf16_supported()
    policy = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if mixed_precision
        else MixedPrecisionPolicy()
    )
    units = set(model._no_split_modules or [])
    for module in model.modules():
        if type(module).__name__ in units:
            fully_shard(module, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    body = model.get_decoder()
    if body is not None and body is not model:
        # The chunked log-probabilities (tts.train.logprobs) run the body alone and then read the
        # output embedding's weight, which FSDP2 gathers only in the model's own forward: the
        # body's forward runs as one of the model's forward methods, so the whole outer unit is
        # gathered there (kept whole after it, as FSDP2 keeps its root) and reduced after the
        # backward.
        model.body_forward = body.forward
        register_fsdp_forward_method(model, "body_forward")
        body.forward = model.body_forward
    return model


def full_weights(model: PreTrainedModel, ranks: Ranks) -> dict[str, torch.Tensor]:
    """Every weight whole, by Hugging Face name, on every rank (a collective under torchrun):
    what the rank's rollout engine and the saved folders take."""
    if not ranks.joined:
        return model.state_dict()
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))


def optimizer_state(
    model: PreTrainedModel, optimizer: torch.optim.Optimizer, ranks: Ranks
) -> dict[str, Any]:
    """The optimizer's state for a checkpoint (a collective under torchrun: the whole state,
    keyed by parameter name, so any rank count can resume it)."""
    if not ranks.joined:
        return optimizer.state_dict()
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_optimizer_state_dict(model, optimizer, options=options)


def optimizer_loader(
    model: PreTrainedModel, optimizer: torch.optim.Optimizer, ranks: Ranks
) -> Callable[[dict[str, Any]], None]:
    """What puts an `optimizer_state` back into `optimizer` on this rank."""
    if not ranks.joined:
        return optimizer.load_state_dict

    def load(state: dict[str, Any]) -> None:
        if any(isinstance(key, int) for key in state["state"]):
            raise TTSError("this checkpoint was written by a one-process run; resume it there")
        options = StateDictOptions(full_state_dict=True)
        set_optimizer_state_dict(model, optimizer, optim_state_dict=state, options=options)

    return load


def as_float(value: torch.Tensor) -> float:
    """A scalar tensor as a float; a sharded (DTensor) one made whole first."""
    return float(value.full_tensor() if isinstance(value, DTensor) else value)
