"""The `hf` backend: `transformers.generate`, the slow, exact reference for every other backend.

Concurrent requests are batched: requests that arrive while a batch is generating wait in a
queue, and the next batch takes every waiting request that samples the same way (same params
apart from `n`). A request with a seed is generated in a batch of its own, after seeding torch,
because transformers draws every row of a batch from one random stream: that is the only way its
samples stay the same whatever else is in flight. Generation runs in a worker thread so the event
loop keeps serving while the model computes (`tts.batching`, `tts.devices.DEVICE_THREAD`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from tts.batching import BatchQueue
from tts.devices import DEVICE_THREAD
from tts.engine.backend import (
    Completion,
    SamplingParams,
    check_token_ids,
    encode_prompt,
    eos_token_ids,
    truncate_at_stop,
)


@dataclass
class _Request:
    prompt_ids: list[int]
    params: SamplingParams


class HFBackend:
    """Generate with `model.generate` from a Hugging Face folder.

    max_batch_size: the most rows (prompts times `n`) one `generate` call takes.
    """

    def __init__(
        self,
        model_dir: str | Path,
        device: torch.device,
        dtype: torch.dtype,
        max_batch_size: int = 64,
    ) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self._queue = BatchQueue(self._generate, self._take_batch)
        self.model = DEVICE_THREAD.submit(_load_model, model_dir, device, dtype).result()
        self.device = device
        self.max_batch_size = max_batch_size
        self.eos_token_ids = eos_token_ids(model_dir, self.tokenizer)
        pad = self.tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else min(self.eos_token_ids, default=0)

    async def generate(self, prompt: str | list[int], params: SamplingParams) -> list[Completion]:
        prompt_ids = encode_prompt(self.tokenizer, prompt)
        check_token_ids(prompt_ids, params, self.model.config.vocab_size)
        return await self._queue.submit(_Request(prompt_ids, params))

    def _take_batch(self, waiting: list[_Request]) -> list[int]:
        first = waiting[0]
        taken, rows = [0], first.params.n
        if first.params.seed is None:
            key = dataclasses.replace(first.params, n=1)
            for i, request in enumerate(waiting[1:], start=1):
                fits = rows + request.params.n <= self.max_batch_size
                if fits and dataclasses.replace(request.params, n=1) == key:
                    taken.append(i)
                    rows += request.params.n
        return taken

    @torch.inference_mode()
    def _generate(self, batch: list[_Request]) -> list[list[Completion]]:
        params = batch[0].params
        rows = [r.prompt_ids for r in batch for _ in range(r.params.n)]
        width = max(len(ids) for ids in rows)
        # Left padding, so every row's next token sits in the last column.
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, ids in enumerate(rows):
            input_ids[i, width - len(ids) :] = torch.tensor(ids)
            attention_mask[i, width - len(ids) :] = 1
        if params.seed is not None:
            torch.manual_seed(params.seed)
        output = self.model.generate(
            input_ids=input_ids.to(self.device),
            attention_mask=attention_mask.to(self.device),
            generation_config=self._generation_config(params),
            tokenizer=self.tokenizer,
        )
        new_tokens = output.sequences[:, width:].tolist()
        logits = torch.stack(output.logits, dim=1) if params.logprobs is not None else None
        completions, row = [], 0
        for request in batch:
            prompt_logprobs = self._prompt_logprobs(request)
            completions.append(
                [
                    self._completion(new_tokens[row + j], request, logits, row + j)
                    for j in range(request.params.n)
                ]
            )
            for completion in completions[-1]:
                completion.prompt_logprobs = prompt_logprobs
            row += request.params.n
        return completions

    def _prompt_logprobs(self, request: _Request) -> list[dict[int, float] | None] | None:
        """The prompt tokens' logprobs, from a forward pass over the prompt alone (no padding,
        so nothing differs from the model's own scoring of the text)."""
        top, ids = request.params.prompt_logprobs, request.prompt_ids
        if top is None:
            return None
        logits = self.model(torch.tensor([ids], device=self.device)).logits[0, :-1]
        return [None, *self._logprobs(logits, ids[1:], top)]

    def _generation_config(self, params: SamplingParams) -> GenerationConfig:
        # A fresh config rather than the model's own, so that defaults shipped in a model's
        # generation_config.json (top_k=20, repetition_penalty, ...) never change the sampling
        # a request asked for.
        sample = params.temperature > 0
        return GenerationConfig(
            max_new_tokens=params.max_tokens,
            do_sample=sample,
            temperature=params.temperature if sample else None,
            top_p=params.top_p if sample and params.top_p < 1 else None,
            top_k=params.top_k if sample and params.top_k > 0 else None,
            min_p=params.min_p if sample and params.min_p > 0 else None,
            stop_strings=list(params.stop) or None,
            # An empty list when nothing may stop it (ignore_eos): None would be filled in
            # from the model's generation config, EOS included.
            eos_token_id=sorted(self._stop_ids(params)),
            pad_token_id=self.pad_token_id,
            return_dict_in_generate=True,
            output_logits=params.logprobs is not None,
        )

    def _completion(
        self, tokens: list[int], request: _Request, logits: torch.Tensor | None, row: int
    ) -> Completion:
        params = request.params
        stops = self._stop_ids(params)
        end = next((i + 1 for i, t in enumerate(tokens) if t in stops), None)
        finish = "stop" if end is not None else "length"
        tokens = tokens[:end] if end is not None else tokens
        reason = tokens[-1] if end and tokens[-1] not in self.eos_token_ids else None
        text = self._decode(tokens)
        if params.stop:
            text, matched = truncate_at_stop(text, params.stop)
            if matched is not None:
                finish, reason = "stop", matched
                tokens = tokens[: self._tokens_until_stop(tokens, params.stop)]
        return Completion(
            text=text,
            token_ids=tokens,
            finish_reason=finish,
            logprobs=self._logprobs(logits[row], tokens, params.logprobs)
            if logits is not None
            else None,
            prompt_tokens=len(request.prompt_ids),
            cached_tokens=0,
            stop_reason=reason,
        )

    def _stop_ids(self, params: SamplingParams) -> set[int]:
        eos = set() if params.ignore_eos else self.eos_token_ids
        return eos | set(params.stop_token_ids)

    def _decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def _tokens_until_stop(self, tokens: list[int], stop: tuple[str, ...]) -> int:
        """The shortest prefix of `tokens` whose text holds a stop string (binary search)."""
        low, high = 1, len(tokens)
        while low < high:
            mid = (low + high) // 2
            if truncate_at_stop(self._decode(tokens[:mid]), stop)[1] is not None:
                high = mid
            else:
                low = mid + 1
        return high

    @staticmethod
    def _logprobs(logits: torch.Tensor, tokens: list[int], top: int) -> list[dict[int, float]]:
        logprobs = torch.log_softmax(logits[: len(tokens)].float(), dim=-1)
        result = []
        for step, token in enumerate(tokens):
            entry = {token: logprobs[step, token].item()}
            if top > 0:
                values, ids = logprobs[step].topk(top)
                entry.update(zip(ids.tolist(), values.tolist()))
            result.append(entry)
        return result


def _load_model(model_dir: str | Path, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device).eval()
