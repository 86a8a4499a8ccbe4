"""When a sequence ends, and how much of its text a completion shows.

A sequence stops at the model's EOS (unless the request ignores it), at one of its stop token
ids, once its text contains one of its stop strings, or at its length limit. Stop strings are
matched on decoded text, so the text is cut before the first match while the token ids keep
every generated token (as vLLM and the OpenAI API do it). A growing text shown to a stream
holds back what could still become a stop string, so that what it shows never has to shrink.
"""

from __future__ import annotations

from typing import Any

from tts.engine.backend import FinishReason, truncate_at_stop
from tts.engine.native.sequence import Sequence


class StopConditions:
    """The end conditions of one model's sequences: its EOS ids, its tokenizer (stop strings
    are matched on text) and its longest sequence."""

    def __init__(self, tokenizer: Any, eos_token_ids: frozenset[int], max_model_len: int) -> None:
        self.tokenizer = tokenizer
        self.eos_token_ids = eos_token_ids
        self.max_model_len = max_model_len

    def finish_reason(self, seq: Sequence) -> FinishReason | None:
        """Why `seq` ends with its last token, or None while it goes on."""
        params, token = seq.params, seq.token_ids[-1]
        if token in params.stop_token_ids or (
            token in self.eos_token_ids and not params.ignore_eos
        ):
            return "stop"
        if params.stop:
            # Only the tail can hold a stop string that the previous token did not complete.
            window = max(len(s) for s in params.stop) + 8
            tail = self.tokenizer.decode(seq.output_ids[-window:], skip_special_tokens=True)
            if truncate_at_stop(tail, params.stop)[1] is not None:
                return "stop"
        if len(seq.output_ids) >= params.max_tokens or seq.num_tokens >= self.max_model_len:
            return "length"
        return None

    def text(self, seq: Sequence, final: bool) -> tuple[str, str | int | None]:
        """The text a completion of `seq` shows and its stop reason: the stop token or stop
        string that ended it, None for EOS and length. Unless `final` or finished, the text is
        only the part that can no longer change."""
        text = self.tokenizer.decode(seq.output_ids, skip_special_tokens=True)
        last = seq.token_ids[-1]
        reason = (
            last if last in seq.params.stop_token_ids and last not in self.eos_token_ids else None
        )
        if seq.params.stop and reason is None:
            text, reason = truncate_at_stop(text, seq.params.stop)
        if not final and seq.finish_reason is None:
            text = _settled(text, seq.params.stop)
        return text, reason


def _settled(text: str, stop: tuple[str, ...]) -> str:
    """The part of a growing text that can no longer change: without a trailing half-decoded
    character, and without a tail that might be the start of a stop string."""
    text = text.rstrip("\ufffd")
    held = max((k for s in stop for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
    return text[: len(text) - held]
