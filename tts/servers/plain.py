"""Plain requests (no `tts`, no `reasoning_effort`): the backend samples the prompt directly,
as any OpenAI-compatible server would."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from typing import Any

from jinja2 import TemplateError

from tts.engine import Backend, Completion, SamplingParams
from tts.engine.backend import encode_prompt
from tts.servers.config import ServerConfig
from tts.servers.errors import APIError
from tts.servers.replies import Reply, completion_extra, usage
from tts.servers.schemas import ChatRequest, CompletionRequest, Message, StreamOptions
from tts.servers.streaming import DONE, error_event, event


def chat_prompt(tokenizer: Any, messages: list[Message]) -> str:
    """The conversation through the model's own chat template, ready for the reply."""
    if not getattr(tokenizer, "chat_template", None):
        raise APIError(400, "the model has no chat template; use /v1/completions", "messages")
    # Chat templates know "system"; OpenAI's "developer" role means the same.
    turns = [
        {"role": "system" if m.role == "developer" else m.role, "content": m.text}
        | ({"name": m.name} if m.name is not None else {})
        for m in messages
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
    prompts = len(request.prompts) if isinstance(request, CompletionRequest) else 1
    echo = isinstance(request, CompletionRequest) and request.echo
    if prompts * request.n > config.max_n:
        raise APIError(
            400,
            f"{prompts} prompts with n={request.n} ask for {prompts * request.n} completions; "
            f"this server allows at most {config.max_n}",
            "prompt",
        )
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
            # echo with logprobs scores the prompt too, with as many alternatives (as vLLM does)
            prompt_logprobs=request.num_logprobs if echo else None,
        )
    except ValueError as error:
        raise APIError(400, str(error), code="invalid_value") from None


def plain_usage(completions: list[Completion], n: int) -> dict[str, Any]:
    # Each prompt's n samples come together and share it: a prompt is counted once, as OpenAI does.
    firsts = completions[::n]
    generated = sum(len(c.token_ids) for c in completions)
    prompt = sum(c.prompt_tokens for c in firsts)
    return usage(prompt, generated, sum(c.cached_tokens for c in firsts))


def plain_response(
    reply: Reply,
    completions: list[Completion],
    params: SamplingParams,
    echo: list[str | list[int]] | None = None,
) -> dict[str, Any]:
    """Choice i * n + j is prompt i's sample j, as OpenAI numbers them. With `echo` (the
    prompts), a choice's text, and its logprobs when asked, start with its prompt's."""
    top, choices = params.logprobs, []
    for index, completion in enumerate(completions):
        text, prompt_ids = completion.text, None
        if echo is not None:
            prompt = echo[index // params.n]
            text = (prompt if isinstance(prompt, str) else reply.tokenizer.decode(prompt)) + text
            prompt_ids = None if top is None else encode_prompt(reply.tokenizer, prompt)
        logprobs = None if top is None else reply.logprobs(completion, top, prompt=prompt_ids)
        extra = {"tts": completion_extra(completion)} if reply.kind == "text" else {}
        if reply.token_ids:
            extra["token_ids"] = completion.token_ids
        choices.append(reply.choice(index, text, completion.finish_reason, logprobs, **extra))
    return reply.response(choices, plain_usage(completions, params.n))


async def generate_all(
    backend: Backend, prompts: list[str | list[int]], params: SamplingParams
) -> list[Completion]:
    """Every prompt's n completions, prompt by prompt. If one prompt fails, the others are
    cancelled (freeing their KV blocks) rather than left running for nobody."""
    tasks = [asyncio.ensure_future(backend.generate(prompt, params)) for prompt in prompts]
    try:
        return [c for group in await asyncio.gather(*tasks) for c in group]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def open_stream(
    backend: Backend, prompts: list[str | list[int]], params: SamplingParams
) -> AsyncGenerator[list[Completion], None]:
    """Growing snapshots of every prompt's completions, in prompt order."""
    streams = [_snapshots(backend, prompt, params) for prompt in prompts]
    return streams[0] if len(streams) == 1 else _merged(streams)


def _snapshots(
    backend: Backend, prompt: str | list[int], params: SamplingParams
) -> AsyncGenerator[list[Completion], None]:
    # The backend's own `stream`, or one final snapshot when it has none.
    if hasattr(backend, "stream"):
        return backend.stream(prompt, params)

    async def once() -> AsyncGenerator[list[Completion], None]:
        yield await backend.generate(prompt, params)

    return once()


async def _merged(
    streams: list[AsyncGenerator[list[Completion], None]],
) -> AsyncGenerator[list[Completion], None]:
    """One snapshot of all the streams' completions each time any of them moves (once every
    stream has its first). Each stream runs on its own, so all prompts generate at once."""
    latest: list[list[Completion] | None] = [None] * len(streams)
    pending = {asyncio.ensure_future(anext(s)): i for i, s in enumerate(streams)}
    try:
        while pending:
            finished, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in finished:
                index = pending.pop(task)
                try:
                    latest[index] = task.result()
                except StopAsyncIteration:
                    continue
                pending[asyncio.ensure_future(anext(streams[index]))] = index
            if all(snapshot is not None for snapshot in latest):
                yield [c for snapshot in latest for c in snapshot]
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for stream in streams:
            await stream.aclose()


async def plain_events(
    reply: Reply,
    snapshots: AsyncGenerator[list[Completion], None],
    first: list[Completion],
    params: SamplingParams,
    stream_options: StreamOptions | None,
    count: Callable[[dict[str, Any]], None],
) -> AsyncGenerator[str, None]:
    """One chunk per snapshot that changed, holding each choice's new text; a choice's last
    chunk carries its finish_reason. With `continuous_usage_stats` every chunk carries the usage
    so far. Closing this closes the snapshots, which aborts the generation and frees its KV
    blocks; a failure after the first byte ends the stream with an error event."""
    top, options = params.logprobs, stream_options or StreamOptions()
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
                if reply.token_ids:  # as vLLM streams them: each chunk's new ids
                    extra["token_ids"] = completion.token_ids[sent_tokens[index] :]
                choices.append(
                    reply.choice(
                        index, new, completion.finish_reason, logprobs, delta=True, **extra
                    )
                )
                sent_text[index] += len(new)
                sent_tokens[index] = len(completion.token_ids)
                done[index] = last
            if choices:
                running = (
                    {"usage": plain_usage(snapshot, params.n)}
                    if options.continuous_usage_stats
                    else {}
                )
                yield event(reply.chunk(choices, **running))
            final = snapshot
            snapshot = None if all(done) else await anext(snapshots, None)
        totals = plain_usage(final, params.n)
        count(totals)
        if options.include_usage:
            yield event(reply.chunk([], usage=totals))
        yield DONE
    except Exception as error:  # after the 200: report it in the stream, as OpenAI does
        yield error_event(error)
    finally:
        await snapshots.aclose()
