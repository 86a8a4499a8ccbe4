"""What every model-based scorer shares: concurrent `score` calls become one padded forward pass.

Strategies call `score` from many coroutines at once (one per beam, per problem, per server
request). Calls that arrive while a forward pass runs wait in a queue; the next pass takes up to
`max_batch_size` of them, right-padded into one batch. The pass runs on the device thread so
the event loop keeps serving (and the generation backend keeps generating) meanwhile
(`tts.batching`). A caller cancelled while waiting is dropped before its pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tts.batching import BatchQueue
from tts.errors import TTSError


@dataclass
class _Request:
    input_ids: list[int]
    positions: list[int]  # the token whose output scores step i, one per step, increasing
    start: int  # the first token of the solution


class BatchedScorer:
    """A reward model behind the `Scorer` protocol. A subclass says how to build one input and how
    to read step probabilities out of a batch; this class queues, batches and counts.

    A subclass implements:
      - `encode(problem, steps) -> (input_ids, positions, start)`: the token ids of one input,
        for each step the index of the token whose output scores it, and the index of the
        solution's first token (0 in formats whose scores read only those positions);
      - `step_probabilities(input_ids, attention_mask, rows, cols, starts) -> Tensor`: float32,
        shape (len(rows),), the probability that the step scored at token (rows[k], cols[k]) is
        good; starts[r] is row r's solution start, which only a score that sums over the
        solution's tokens reads (`tts.verifiers.prm.implicit`).

    Inputs longer than `max_positions` are refused with a `TTSError` rather than truncated:
    cutting the left drops the problem and the early steps' score positions, cutting the right
    drops the steps being scored, and either gives a score of a different text than asked.

    Attributes: `calls` (how many `score` calls), `tokens` (input tokens scored, padding not
    counted), `model`, `tokenizer`, `device`.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        device: torch.device,
        max_batch_size: int,
        max_positions: int | None,
    ) -> None:
        if max_batch_size < 1:
            raise TTSError(f"max_batch_size must be at least 1, got {max_batch_size}")
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.max_batch_size = max_batch_size
        self.max_positions = max_positions
        pad = tokenizer.pad_token_id
        # Padding sits right of every input and is masked, so its id never reaches a score.
        self.pad_token_id = pad if pad is not None else 0
        self.calls = 0
        self.tokens = 0
        self._queue = BatchQueue(self._forward, self._take)

    def encode(self, problem: str, steps: list[str]) -> tuple[list[int], list[int], int]:
        raise NotImplementedError

    def step_probabilities(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        rows: torch.Tensor,
        cols: torch.Tensor,
        starts: torch.Tensor,
    ) -> torch.Tensor:
        raise NotImplementedError

    def count_tokens(self, problem: str, steps: list[str]) -> int:
        """Input tokens a `score` call on these steps runs through the model."""
        return len(self.encode(problem, steps)[0]) if steps else 0

    async def score(self, problem: str, steps: list[str]) -> list[float]:
        """One probability in [0, 1] per step: that the solution is still right after it."""
        self.calls += 1
        if not steps:
            return []
        input_ids, positions, start = self.encode(problem, steps)
        if len(positions) != len(steps):
            raise TTSError(
                f"{type(self).__name__} found {len(positions)} score positions for "
                f"{len(steps)} steps; the tokenizer merged a separator into a step's text"
            )
        if self.max_positions is not None and len(input_ids) > self.max_positions:
            raise TTSError(
                f"PRM input of {len(input_ids)} tokens is longer than the model's "
                f"{self.max_positions} positions"
            )
        self.tokens += len(input_ids)
        return await self._queue.submit(_Request(input_ids, positions, start))

    def _take(self, waiting: list[_Request]) -> list[int]:
        return list(range(min(len(waiting), self.max_batch_size)))

    @torch.inference_mode()
    def _forward(self, batch: list[_Request]) -> list[list[float]]:
        width = max(len(r.input_ids) for r in batch)
        # Right padding: every input keeps its own positions, and causal models never look
        # right, so a row scores the same as it would alone.
        input_ids = torch.full((len(batch), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        rows, cols = [], []
        for i, request in enumerate(batch):
            input_ids[i, : len(request.input_ids)] = torch.tensor(request.input_ids)
            attention_mask[i, : len(request.input_ids)] = 1
            rows += [i] * len(request.positions)
            cols += request.positions
        probabilities = self.step_probabilities(
            input_ids.to(self.device),
            attention_mask.to(self.device),
            torch.tensor(rows, device=self.device),
            torch.tensor(cols, device=self.device),
            torch.tensor([r.start for r in batch], device=self.device),
        ).tolist()
        results, start = [], 0
        for request in batch:
            results.append(probabilities[start : start + len(request.positions)])
            start += len(request.positions)
        return results
