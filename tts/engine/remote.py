"""The `remote` backend: `generate` sent to any OpenAI-compatible `/v1/completions` endpoint.

vLLM, SGLang, llama.cpp's server and `tts serve` all speak it, so a search strategy can run in
one process against a model served in another. One request carries the whole `generate` call
(`n` completions of one prompt, text or token ids); the server batches whatever is in flight.

Token counts: the completions API returns text, so each request also asks for the generated ids
(vLLM's `return_token_ids`; a server that refuses that field by name is asked again without it,
and never again). Each completion's `token_ids` is, best source first:
1. the ids the server returned: the choice's `token_ids`, else the ids its logprobs name (vLLM's
   `return_tokens_as_token_ids`, asked for whenever logprobs are);
2. as many placeholder zeros as the server says that choice generated: its per-choice
   `tts.completion_tokens` (`tts serve`), else `usage.completion_tokens` when n is 1 (usage sums
   over the choices, so it is exact per choice only then);
3. the text re-tokenized with the local tokenizer (only when none of the above is given and n > 1;
   approximate: it lacks the EOS token and the stop string's tokens, so a warning says so);
4. without a tokenizer, usage shared evenly among the choices.
Search and benchmarks read only the length of `token_ids`, which 1 and 2 give exactly.
`prompt_tokens` is the length of the choice's `prompt_token_ids`, else `usage.prompt_tokens`;
`cached_tokens` is the choice's `tts.cached_tokens`, else `usage.prompt_tokens_details`'s.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from tts.engine.backend import Completion, FinishReason, SamplingParams
from tts.engine.retrying_client import ClientError, RetryingClient
from tts.errors import TTSError


class PlainPrompts:
    """The tokenizer of a remote backend given none: no chat template, so strategies fall back
    to plain prompts (`tts.search.base.build_prompt`); it encodes nothing."""

    chat_template = None


class RemoteBackend:
    """Generate with an OpenAI-compatible server over HTTP.

    url: the server, with or without the trailing `/v1` (`http://127.0.0.1:8000`).
    tokenizer: a local Hugging Face folder holding the served model's tokenizer, whose chat
        template strategies use to build prompts; None: `PlainPrompts`.
    model_name: the `model` field of each request; None: the first id of `GET /v1/models`.
    api_key, max_connections, retries, timeout, backoff: how requests are sent and retried
        (see `RetryingClient`).
    """

    def __init__(
        self,
        url: str,
        tokenizer: str | Path | None = None,
        api_key: str | None = None,
        model_name: str | None = None,
        max_connections: int = 64,
        retries: int = 4,
        timeout: float = 600.0,
        backoff: float = 0.5,
    ) -> None:
        url = url.rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise TTSError(f"remote backend needs an http:// or https:// URL, got {url!r}")
        self.url = url.removesuffix("/v1")
        self.tokenizer = _load_tokenizer(tokenizer) if tokenizer is not None else PlainPrompts()
        self.model_name = model_name
        self.http = RetryingClient(self.url, api_key, max_connections, retries, timeout, backoff)
        self.ask_token_ids = True  # False once the server has refused `return_token_ids`
        self._warned_recount = False

    async def generate(self, prompt: str | list[int], params: SamplingParams) -> list[Completion]:
        """One POST /v1/completions. Cancelling it closes the connection, which the server
        takes as a disconnect (and aborts the request)."""
        if params.prompt_logprobs is not None:
            raise TTSError("the remote backend does not ask servers for prompt log-probabilities")
        body = {"model": self.model_name or await self._default_model(), "prompt": prompt}
        body |= _sampling_fields(params)
        if self.ask_token_ids:
            body["return_token_ids"] = True
        try:
            data = await self.http.request("POST", "/v1/completions", body)
        except ClientError as error:
            if "return_token_ids" not in body or "return_token_ids" not in error.reason:
                raise
            # A server that knows only OpenAI's fields may refuse vLLM's by name: count without.
            self.ask_token_ids = False
            del body["return_token_ids"]
            data = await self.http.request("POST", "/v1/completions", body)
        try:
            choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
            return [self._completion(c, data.get("usage") or {}, len(choices)) for c in choices]
        except (KeyError, TypeError, AttributeError, ValueError) as error:
            raise TTSError(f"{self.url}: not an OpenAI completions answer ({error!r})") from None

    async def aclose(self) -> None:
        """Close the pooled connections of the current event loop's client."""
        await self.http.aclose()

    async def _default_model(self) -> str:
        data = await self.http.request("GET", "/v1/models")
        try:
            self.model_name = data["data"][0]["id"]
        except (KeyError, IndexError, TypeError):
            raise TTSError(f"{self.url}/v1/models lists no model; pass model_name") from None
        return self.model_name

    def _completion(self, choice: dict, usage: dict, num_choices: int) -> Completion:
        extra = choice.get("tts") or {}  # per-choice counts, from `tts serve`
        text = choice.get("text") or ""
        logprobs = _logprobs(choice.get("logprobs"))
        prompt_ids = choice.get("prompt_token_ids")
        details = usage.get("prompt_tokens_details") or {}
        return Completion(
            text=text,
            token_ids=self._token_ids(choice, text, logprobs, usage, num_choices),
            finish_reason=_finish_reason(choice.get("finish_reason")),
            logprobs=logprobs,
            prompt_tokens=len(prompt_ids) if prompt_ids else usage.get("prompt_tokens") or 0,
            cached_tokens=extra.get("cached_tokens", details.get("cached_tokens") or 0),
            stop_reason=extra.get("stop_reason", choice.get("stop_reason")),
        )

    def _token_ids(
        self,
        choice: dict,
        text: str,
        logprobs: list[dict[int, float]] | None,
        usage: dict,
        num_choices: int,
    ) -> list[int]:
        """The choice's generated ids, or placeholders as many as it generated (module doc)."""
        if choice.get("token_ids") is not None:
            return [int(i) for i in choice["token_ids"]]
        if logprobs is not None and all(len(entry) for entry in logprobs):
            return [next(iter(entry)) for entry in logprobs]  # the sampled token is first
        count = (choice.get("tts") or {}).get("completion_tokens")
        if count is None and num_choices == 1:
            count = usage.get("completion_tokens")
        if count is not None:
            return [0] * int(count)
        if not isinstance(self.tokenizer, PlainPrompts):
            if not self._warned_recount:
                self._warned_recount = True
                warnings.warn(
                    f"{self.url} reports no per-choice token counts; counting tokens by "
                    "re-tokenizing each completion's text (approximate)",
                    stacklevel=4,
                )
            return self.tokenizer(text, add_special_tokens=False).input_ids
        total = usage.get("completion_tokens") or 0
        return [0] * (total // num_choices + (choice.get("index", 0) < total % num_choices))


def _load_tokenizer(folder: str | Path) -> Any:
    if not Path(folder).expanduser().is_dir():
        raise TTSError(f"tokenizer folder not found: {folder}")
    try:
        return AutoTokenizer.from_pretrained(Path(folder).expanduser())
    except (OSError, ValueError) as error:
        raise TTSError(f"cannot load a tokenizer from {folder}: {error}") from None


def _sampling_fields(params: SamplingParams) -> dict[str, Any]:
    """The request fields for `params`: OpenAI's, then vLLM's extensions only when they are
    set, so servers that know only OpenAI's fields get nothing they might refuse."""
    fields: dict[str, Any] = {
        "n": params.n,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "max_tokens": params.max_tokens,
    }
    if params.stop:
        fields["stop"] = list(params.stop)
    if params.seed is not None:
        fields["seed"] = params.seed
    if params.logprobs is not None:
        fields["logprobs"] = params.logprobs
        fields["return_tokens_as_token_ids"] = True
    if params.top_k != -1:
        fields["top_k"] = params.top_k
    if params.min_p > 0:
        fields["min_p"] = params.min_p
    if params.stop_token_ids:
        fields["stop_token_ids"] = list(params.stop_token_ids)
    if params.ignore_eos:
        fields["ignore_eos"] = True
    return fields


def _finish_reason(reason: str | None) -> FinishReason:
    # OpenAI also has "content_filter" and llama.cpp "eos": both mean the model stopped.
    return reason if reason in ("length", "abort") else "stop"


def _logprobs(data: dict | None) -> list[dict[int, float]] | None:
    """OpenAI completions logprobs as one {token id: logprob} per token, the sampled token
    first; None when absent or when the server named tokens by text rather than by id."""
    if not data or data.get("tokens") is None:
        return None
    result = []
    tops = data.get("top_logprobs") or [None] * len(data["tokens"])
    for token, logprob, top in zip(data["tokens"], data["token_logprobs"], tops):
        entry = {_token_id(token): logprob}
        entry |= {_token_id(t): lp for t, lp in (top or {}).items()}
        if None in entry:
            return None
        result.append(entry)
    return result


def _token_id(token: str) -> int | None:
    """N from vLLM's "token_id:N"."""
    prefix, _, number = token.partition("token_id:")
    return int(number) if not prefix and number.isdigit() else None
