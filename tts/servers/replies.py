"""The shapes of OpenAI's responses and stream chunks, for chat (`chat.completion`) and text
(`text_completion`) alike, so that the plain and the search paths answer in one format."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from tts.engine import Completion
from tts.errors import TTSError


def usage(prompt: int, completion: int, cached: int, reasoning: int = 0) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


def completion_extra(completion: Completion) -> dict[str, Any]:
    """The `tts` object on each /v1/completions choice: exact counts for the `remote` backend,
    which cannot recount tokens it did not tokenize, and the stop string or token that ended it."""
    return {
        "completion_tokens": len(completion.token_ids),
        "cached_tokens": completion.cached_tokens,
        "stop_reason": completion.stop_reason,
    }


@dataclass
class Reply:
    """One request's answer: its id, creation time and model, and how to shape its parts."""

    kind: Literal["chat", "text"]
    model: str
    tokenizer: Any
    tokens_as_ids: bool = False  # name logprob tokens "token_id:N" (vLLM's extension)
    token_ids: bool = False  # plain choices carry their generated `token_ids` (vLLM's extension)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: int = field(default_factory=lambda: int(time.time()))

    def _head(self, chunk: bool) -> dict[str, Any]:
        if self.kind == "chat":
            prefix, obj = "chatcmpl-", "chat.completion.chunk" if chunk else "chat.completion"
        else:
            prefix, obj = "cmpl-", "text_completion"
        return {"id": prefix + self.id, "object": obj, "created": self.created, "model": self.model}

    def response(self, choices: list[dict[str, Any]], usage: dict[str, Any], **extra: Any) -> dict:
        return {**self._head(chunk=False), "choices": choices, "usage": usage, **extra}

    def chunk(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {**self._head(chunk=True), "choices": choices, **extra}

    def choice(
        self,
        index: int,
        text: str,
        finish_reason: str | None,
        logprobs: dict[str, Any] | None = None,
        delta: bool = False,
        **extra: Any,
    ) -> dict[str, Any]:
        """A choice of a response or, with `delta`, of a stream chunk (`text` is then new text)."""
        if self.kind == "text":
            body: dict[str, Any] = {"text": text}
        elif delta:
            body = {"delta": {"content": text} if text else {}}
        else:
            body = {"message": {"role": "assistant", "content": text}}
        return {
            "index": index,
            **body,
            "logprobs": logprobs,
            "finish_reason": finish_reason,
            **extra,
        }

    def logprobs(
        self, completion: Completion, top: int, start: int = 0, prompt: list[int] | None = None
    ) -> dict[str, Any] | None:
        """Log-probabilities of the generated tokens from `start` on, each with the `top` most
        likely alternatives, in this kind's format. With `prompt` (its token ids: `echo`), the
        prompt's tokens come first, the first one null as OpenAI and vLLM return it."""
        if completion.logprobs is None:
            return None
        entries: list[tuple[int, dict[int, float] | None]] = list(
            zip(completion.token_ids, completion.logprobs)
        )[start:]
        if self.kind == "chat":
            return {"content": [self._chat_entry(token, dist, top) for token, dist in entries]}
        offset = len(self.tokenizer.decode(completion.token_ids[:start]))
        if prompt is not None:
            if completion.prompt_logprobs is None:
                raise TTSError("this backend cannot score prompts: echo with logprobs")
            entries = [*zip(prompt, completion.prompt_logprobs), *entries]
        offsets = []
        for token, _ in entries:
            offsets.append(offset)
            offset += len(self.tokenizer.decode([token]))
        return {
            "tokens": [self._name(token) for token, _ in entries],
            "token_logprobs": [None if dist is None else dist[token] for token, dist in entries],
            "top_logprobs": [
                None if dist is None else {self._name(t): lp for t, lp in _best(dist, top)}
                for _, dist in entries
            ],
            "text_offset": offsets,
        }

    def _name(self, token: int) -> str:
        return f"token_id:{token}" if self.tokens_as_ids else self.tokenizer.decode([token])

    def _chat_entry(self, token: int, dist: dict[int, float], top: int) -> dict[str, Any]:
        def entry(t: int, lp: float) -> dict[str, Any]:
            name = self._name(t)
            return {"token": name, "logprob": lp, "bytes": list(name.encode())}

        return {
            **entry(token, dist[token]),
            "top_logprobs": [entry(t, lp) for t, lp in _best(dist, top)],
        }


def _best(dist: dict[int, float], top: int) -> list[tuple[int, float]]:
    # The engine gives the sampled token plus the `top` most likely ones, which may include it.
    return sorted(dist.items(), key=lambda item: -item[1])[:top]
