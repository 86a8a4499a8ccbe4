"""Plain requests (no `tts`, no `reasoning_effort`): the backend samples the prompt directly,
as any OpenAI-compatible server would."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import Any

from jinja2 import TemplateError

from tts.engine import Backend, Completion, SamplingParams
from tts.servers.config import ServerConfig
from tts.servers.errors import APIError
from tts.servers.replies import Reply, completion_extra, usage
from tts.servers.schemas import ChatRequest, CompletionRequest, Message
from tts.servers.streaming import DONE, error_event, event


def chat_prompt(tokenizer: Any, messages: list[Message]) -> str:
    """The conversation through the model's own chat template, ready for the reply."""
    if not getattr(tokenizer, "chat_template", None):
        raise APIError(400, "the model has no chat template; use /v1/completions", "messages")
    # Chat templates know "system"; OpenAI's "developer" role means the same.
    turns = [
        {"role": "system" if m.role == "developer" else m.role, "content": m.text} for m in messages
    ]
    try:
        return tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=False)
    except TemplateError as error:  # templates raise on turns they do not accept
        raise APIError(
            400, f"the chat template rejected the messages: {error}", "messages"
        ) from None


def check_limits(n: int, max_tokens: int | None, config: ServerConfig, prefix: str = "") -> None:
    """Refuse budgets beyond the server's limits before any work starts."""
    if n > config.max_n:
        raise APIError(400, f"n is {n}; this server allows at most {config.max_n}", prefix + "n")
    if max_tokens is not None and max_tokens > config.max_tokens_limit:
        raise APIError(
            400,
            f"max_tokens is {max_tokens}; this server allows at most {config.max_tokens_limit}",
            prefix + "max_tokens",
        )


def sampling_params(
    request: ChatRequest | CompletionRequest, config: ServerConfig
) -> SamplingParams:
    max_tokens = request.token_limit or config.default_max_tokens
    check_limits(request.n, max_tokens, config)
    try:
        return SamplingParams(
            temperature=1.0 if request.temperature is None else request.temperature,
            top_p=1.0 if request.top_p is None else request.top_p,
            top_k=request.top_k,
            min_p=request.min_p,
            stop_token_ids=request.stop_token_ids,
            max_tokens=max_tokens,
            stop=request.stops,
            seed=request.seed,
            n=request.n,
            logprobs=request.num_logprobs,
            ignore_eos=request.ignore_eos,
        )
    except ValueError as error:
        raise APIError(400, str(error), code="invalid_value") from None


def plain_usage(completions: list[Completion]) -> dict[str, Any]:
    # The n samples share one prompt, counted once as OpenAI does.
    first = completions[0]
    generated = sum(len(c.token_ids) for c in completions)
    return usage(first.prompt_tokens, generated, first.cached_tokens)


def plain_response(reply: Reply, completions: list[Completion], top: int | None) -> dict[str, Any]:
    choices = []
    for index, completion in enumerate(completions):
        logprobs = None if top is None else reply.logprobs(completion, top)
        extra = {"tts": completion_extra(completion)} if reply.kind == "text" else {}
        choices.append(
            reply.choice(index, completion.text, completion.finish_reason, logprobs, **extra)
        )
    return reply.response(choices, plain_usage(completions))


def open_stream(
    backend: Backend, prompt: str | list[int], params: SamplingParams
) -> AsyncGenerator[list[Completion], None]:
    """Growing snapshots from the backend's `stream`, or one final snapshot when it has none."""
    if hasattr(backend, "stream"):
        return backend.stream(prompt, params)

    async def once() -> AsyncGenerator[list[Completion], None]:
        yield await backend.generate(prompt, params)

    return once()


async def plain_events(
    reply: Reply,
    snapshots: AsyncGenerator[list[Completion], None],
    first: list[Completion],
    top: int | None,
    include_usage: bool,
    count: Callable[[dict[str, Any]], None],
) -> AsyncGenerator[str, None]:
    """One chunk per snapshot that changed, holding each choice's new text; a choice's last
    chunk carries its finish_reason. Closing this closes the snapshots, which aborts the
    generation and frees its KV blocks."""
    sent_text = [0] * len(first)
    sent_tokens = [0] * len(first)
    done = [False] * len(first)
    try:
        if reply.kind == "chat":
            opening = {"role": "assistant", "content": ""}
            yield event(reply.chunk([{"index": i, "delta": opening} for i in range(len(first))]))
        snapshot: list[Completion] | None = first
        while snapshot is not None:
            choices = []
            for index, completion in enumerate(snapshot):
                new = completion.text[sent_text[index] :]
                if done[index] or not (new or completion.finish_reason):
                    continue
                logprobs = (
                    None if top is None else reply.logprobs(completion, top, sent_tokens[index])
                )
                last = completion.finish_reason is not None
                extra = (
                    {"tts": completion_extra(completion)} if last and reply.kind == "text" else {}
                )
                choices.append(
                    reply.choice(
                        index, new, completion.finish_reason, logprobs, delta=True, **extra
                    )
                )
                sent_text[index] += len(new)
                sent_tokens[index] = len(completion.token_ids)
                done[index] = last
            if choices:
                yield event(reply.chunk(choices))
            final = snapshot
            snapshot = None if all(done) else await anext(snapshots, None)
        totals = plain_usage(final)
        count(totals)
        if include_usage:
            yield event(reply.chunk([], usage=totals))
        yield DONE
    except Exception as error:  # after the 200: report it in the stream, as OpenAI does
        yield error_event(error)
    finally:
        await snapshots.aclose()
