"""PRIME's implicit PRM in the RL loop (`advantage: prime`): the model, its optimizer and frozen
reference, one forward per step that both scores the rollouts' tokens and trains it on their
outcomes. The equations are `tts.train.prime`'s."""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from tts.models.builtin import BUILTIN
from tts.prompts import build_prompt
from tts.train.distributed import Ranks
from tts.train.gae import whiten
from tts.train.grpo_config import GRPOConfig
from tts.train.logprobs import token_logprobs
from tts.train.policy_update import rank_micro_batches
from tts.train.prime import prime_returns, prm_loss
from tts.train.recipe import model_folder
from tts.train.rollout import Rollout
from tts.train.side_model import SideModel
from tts.verifiers.prm.token import PROBLEM


class OnlinePRM:
    """The implicit PRM, its optimizer and its frozen reference."""

    def __init__(
        self,
        config: GRPOConfig,
        ranks: Ranks,
        device: torch.device,
        state: dict[str, Any] | None,
    ) -> None:
        settings = config.prime
        start = model_folder(settings.model or config.model)
        model = AutoModelForCausalLM.from_pretrained(start, dtype=torch.float32)
        self.side = SideModel(model, settings.lr, config, ranks, device, state)
        reference_folder = model_folder(settings.reference) if settings.reference else start
        self.reference: PreTrainedModel = AutoModelForCausalLM.from_pretrained(
            reference_folder, dtype=torch.float32
        ).to(device)
        self.reference.eval().requires_grad_(False)
        self.reference_folder = reference_folder
        self.settings = settings
        self.ranks = ranks

    def advantages(
        self, batch: Rollout, pad_id: int, config: GRPOConfig, step: int
    ) -> dict[str, float]:
        """One forward of the PRM over the batch: its token rewards give
        `batch.token_advantages`, its outcome cross-entropy one optimizer step of the PRM; the
        log's statistics over every rank."""
        model, beta = self.side.model, self.settings.beta
        self.side.set_lr(step, config)
        model.train()
        labels = batch.parts["accuracy"]
        [completions] = self.ranks.sum([float(len(batch.sequences))])
        rewards: dict[int, torch.Tensor] = {}
        sums = dict.fromkeys(["prm_loss", "prm_accuracy", "implicit_reward"], 0.0)
        for micro in rank_micro_batches(batch, config, self.ranks):
            seqs = [batch.sequences[i] for i in micro] or [[pad_id, pad_id]]
            starts = [batch.starts[i] for i in micro] or [1]
            logprobs, mask, _ = token_logprobs(model, seqs, starts, pad_id, 1.0)
            with torch.no_grad():
                reference, _, _ = token_logprobs(self.reference, seqs, starts, pad_id, 1.0)
            ratios = (logprobs - reference) * mask
            if not micro:  # under torchrun, a rank with fewer micro-batches joins the collectives
                (ratios.sum() * 0.0).backward()
                continue
            sums_per_row = ratios.sum(dim=1)
            target = torch.tensor([labels[i] for i in micro], device=mask.device)
            loss = prm_loss(sums_per_row, target, beta)
            weight = len(micro) / completions
            (loss * weight * self.ranks.world).backward()
            with torch.no_grad():
                sums["prm_loss"] += loss.item() * weight
                sums["prm_accuracy"] += float(((sums_per_row > 0) == (target > 0)).sum())
                sums["implicit_reward"] += float(beta * sums_per_row.sum())
                for row, i in enumerate(micro):
                    rewards[i] = beta * ratios[row, mask[row] > 0].detach()
        norm = self.side.step(config.grad_clip)
        model.eval()
        order = range(len(batch.sequences))
        returns = prime_returns(
            [rewards[i] for i in order],
            batch.rewards,
            config.group_size,
            self.settings.process_weight,
        )
        flat = whiten(torch.cat(returns) if returns else torch.zeros(0), self.ranks)
        batch.token_advantages = [
            part.tolist() for part in flat.split([len(row) for row in returns])
        ]
        totals = dict(zip(sums, self.ranks.sum(list(sums.values()))))
        totals["prm_accuracy"] /= max(completions, 1.0)
        totals["implicit_reward"] /= max(completions, 1.0)
        return totals | {"prm_grad_norm": norm}

    def prm_config(self, tokenizer: PreTrainedTokenizerBase, config: GRPOConfig) -> dict[str, Any]:
        """The `prm_config.json` that makes the trained PRM a `--prm` folder: an implicit PRM in
        sum form (the form PRIME trains), read on the policy's own prompt and text."""
        reference = self.reference_folder.resolve()
        return {
            "format": "implicit_prm",
            "step_separator": "\n\n",
            "prompt_template": build_prompt(tokenizer, PROBLEM, config.instruction),
            "reference": "builtin" if reference == BUILTIN.resolve() else str(reference),
            "beta": self.settings.beta,
            "value": "sum",
        }
