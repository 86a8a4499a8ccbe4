"""PPO's critic (`advantage: gae`): a value model trained beside the policy, whose values turn
per-token rewards into per-token advantages by GAE (`tts.train.gae`).

The value model is a causal LM's body with a one-output token-classification head
(`AutoModelForTokenClassification`, `num_labels=1`, as TRL's and OpenRLHF's critics are a
backbone with a value head), started from the policy's own starting folder unless
`critic.model` names another; its value at a position is V of the state that predicts the next
token, so values sit in the same [B, T] columns as the policy's log-probabilities.

Each step, before the policy update: the values of the batch (no gradient), the rewards of every
completion token (the rule reward of the whole completion on its last token, plus the process
rewards of `tts.train.process_rewards` on each step's last token when `process_reward` is set),
GAE, whitening; after it, `epochs` optimizer steps of the clipped value loss towards the returns.
"""

from __future__ import annotations

from typing import Any

import torch
import transformers
from transformers import (
    AutoConfig,
    AutoModelForTokenClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from tts.train.distributed import Ranks
from tts.train.gae import explained_variance, gae, value_loss, whiten
from tts.train.grpo_config import GRPOConfig
from tts.train.logprobs import padded
from tts.train.policy_update import aligned, rank_micro_batches
from tts.train.process_rewards import ProcessRewards
from tts.train.recipe import model_folder
from tts.train.rollout import Rollout
from tts.train.side_model import SideModel


def load_value_model(folder: str, seed: int) -> PreTrainedModel:
    """A causal LM folder's body with a new one-output head (seeded), without dropout: a
    value is a regression target, not a classifier's."""
    torch.manual_seed(seed)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the head is new on purpose: no report
    try:
        source = model_folder(folder)
        settings = AutoConfig.from_pretrained(source, num_labels=1)
        settings.classifier_dropout = 0.0
        return AutoModelForTokenClassification.from_pretrained(
            source, config=settings, dtype=torch.float32
        )
    finally:
        transformers.logging.set_verbosity(verbosity)


def token_values(
    model: PreTrainedModel, batch: list[list[int]], starts: list[int], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, T] values and completion mask, laid out as `token_logprobs`'s: column t is the value
    of the state at position t, the one that predicts the token at t + 1."""
    ids, attention, mask = padded(batch, starts, pad_id, next(model.parameters()).device)
    output = model(input_ids=ids, attention_mask=attention)
    return output.logits[:, :-1, 0].float(), mask


class Critic:
    """The value model, its optimizer and, with `process_reward`, the PRM."""

    def __init__(
        self,
        config: GRPOConfig,
        ranks: Ranks,
        device: torch.device,
        state: dict[str, Any] | None,
        tokenizer: PreTrainedTokenizerBase,
    ) -> None:
        settings = config.critic
        model = load_value_model(settings.model or config.model, config.seed)
        self.side = SideModel(model, settings.lr, config, ranks, device, state)
        self.settings = settings
        self.ranks = ranks
        self.process = None
        if config.process_reward is not None:
            self.process = ProcessRewards(config.process_reward, tokenizer, device)
        self._targets: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def advantages(
        self, batch: Rollout, pad_id: int, config: GRPOConfig, step: int
    ) -> dict[str, float]:
        """Set `batch.token_advantages` (GAE, whitened over every rank's tokens) and keep the
        old values and returns for `update`; the log's statistics."""
        model = self.side.model
        completions = [seq[start:] for seq, start in zip(batch.sequences, batch.starts)]
        rewards = [[0.0] * len(tokens) for tokens in completions]
        process_sum = 0.0
        if self.process is not None:
            rewards = self.process.token_rewards(batch.problems, completions)
            process_sum = sum(sum(row) for row in rewards)
        for row, outcome in zip(rewards, batch.rewards):
            if row:
                row[-1] += outcome
        advantages: dict[int, torch.Tensor] = {}
        model.eval()
        with torch.no_grad():
            for micro in rank_micro_batches(batch, config, self.ranks):
                if not micro:
                    token_values(model, [[pad_id, pad_id]], [1], pad_id)
                    continue
                starts = [batch.starts[i] for i in micro]
                values, mask = token_values(
                    model, [batch.sequences[i] for i in micro], starts, pad_id
                )
                token_rewards = aligned([rewards[i] for i in micro], starts, values)
                advantage, returns = gae(
                    token_rewards, values, mask, self.settings.gamma, self.settings.lam
                )
                for row, i in enumerate(micro):
                    columns = mask[row] > 0
                    advantages[i] = advantage[row, columns]
                    self._targets[i] = (values[row, columns], returns[row, columns])
        order = range(len(batch.sequences))
        flat = torch.cat([advantages[i] for i in order]) if order else torch.zeros(0)
        flat = whiten(flat, self.ranks).split([len(tokens) for tokens in completions])
        batch.token_advantages = [part.tolist() for part in flat]
        values = torch.cat([self._targets[i][0] for i in order]) if order else torch.zeros(0)
        returns = torch.cat([self._targets[i][1] for i in order]) if order else torch.zeros(0)
        sums = self.ranks.sum(
            [float(values.sum()), float(values.numel()), process_sum, float(len(completions))]
        )
        stats = {
            "value_mean": sums[0] / max(sums[1], 1.0),
            "explained_variance": explained_variance(values, returns, self.ranks),
        }
        if self.process is not None:
            stats["process_reward"] = sums[2] / max(sums[3], 1.0)
        return stats

    def update(
        self, batch: Rollout, pad_id: int, config: GRPOConfig, step: int
    ) -> dict[str, float]:
        """`epochs` optimizer steps of the clipped value loss on the batch `advantages` saw; the
        last epoch's statistics over every rank."""
        model = self.side.model
        self.side.set_lr(step, config)
        model.train()
        micros = rank_micro_batches(batch, config, self.ranks)
        [tokens] = self.ranks.sum([float(sum(len(t[0]) for t in self._targets.values()))])
        totals: dict[str, float] = {}
        for _ in range(config.epochs):
            sums = dict.fromkeys(["value_loss", "value_clip_fraction"], 0.0)
            for micro in micros:
                if not micro:
                    values, _ = token_values(model, [[pad_id, pad_id]], [1], pad_id)
                    (values.sum() * 0.0).backward()
                    continue
                starts = [batch.starts[i] for i in micro]
                values, mask = token_values(
                    model, [batch.sequences[i] for i in micro], starts, pad_id
                )
                old = aligned([self._targets[i][0].tolist() for i in micro], starts, values)
                returns = aligned([self._targets[i][1].tolist() for i in micro], starts, values)
                loss, clip_fraction = value_loss(
                    values, old, returns, mask, self.settings.value_clip
                )
                weight = float(mask.sum()) / max(tokens, 1.0)
                (loss * weight * self.ranks.world).backward()
                sums["value_loss"] += loss.item() * weight
                sums["value_clip_fraction"] += clip_fraction * weight
            norm = self.side.step(config.grad_clip)
            totals = dict(zip(sums, self.ranks.sum(list(sums.values()))))
            totals["value_grad_norm"] = norm
        model.eval()
        self._targets = {}
        return totals
