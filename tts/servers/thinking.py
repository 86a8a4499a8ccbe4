"""Requests that ask for more thinking: a `tts` object or a `reasoning_effort` level picks a
search strategy, which solves the request's problem with the server's backend and PRM.

A strategy poses a *problem* with its own instruction and the model's chat template (so its
prompts are the ones it was benchmarked with): for chat that is the last user message, so system
messages and earlier turns do not reach it; for completions, the prompt text.
"""

from __future__ import annotations

import asyncio
from collections import Counter as Tally
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

from tts.search import SearchResult, Strategy, make_strategy
from tts.servers.config import ServerConfig
from tts.servers.errors import APIError
from tts.servers.replies import Reply, usage
from tts.servers.sampling import check_limits
from tts.servers.schemas import ChatRequest, CompletionRequest
from tts.servers.streaming import DONE, error_event, event, keepalive

PIECE = 32  # characters per streamed delta of a finished answer


@dataclass
class Search:
    """A planned search: the strategy built from the request, and what to return."""

    name: str
    strategy: Strategy
    return_tree: bool


def plan_search(request: ChatRequest | CompletionRequest, config: ServerConfig) -> Search | None:
    """The strategy a request asks for, None for plain sampling. Options layer up: the effort
    preset, then the request's own sampling fields, then the `tts` object."""
    if request.tts is None and request.reasoning_effort is None:
        return None
    name, options = "majority", {}
    if request.reasoning_effort is not None:
        preset = config.reasoning_effort.get(request.reasoning_effort)
        if preset is None:
            levels = ", ".join(config.reasoning_effort)
            raise APIError(400, f"reasoning_effort must be one of {levels}", "reasoning_effort")
        name, options = preset.strategy, dict(preset.options)
    fields = {
        "temperature": request.temperature,
        "top_p": request.top_p,
        "seed": request.seed,
        "max_tokens": request.token_limit,
    }
    options |= {key: value for key, value in fields.items() if value is not None}
    if request.tts is not None:
        name = request.tts.strategy or name
        options |= request.tts.options
    if request.n != 1:
        raise APIError(400, "a search returns one answer; set its budget with tts.n instead", "n")
    strategy = make_strategy(name, **options)  # a TTSError (400) on bad options
    settings = strategy.config
    for budget in ("n", "simulations"):
        value = getattr(settings, budget, None)
        if value is not None:
            check_limits(value, None, config, prefix="tts.")
    check_limits(1, settings.max_tokens, config, prefix="tts.")
    return_tree = request.tts is not None and request.tts.return_tree
    return Search(name, strategy, return_tree)


def split_reasoning(text: str) -> tuple[str | None, str]:
    """(reasoning inside <think>...</think>, the answer after it); no </think>: (None, text)."""
    head, closed, answer = text.partition("</think>")
    if not closed:
        return None, text
    return head.split("<think>", 1)[-1].strip(), answer.strip()


def search_extra(search: Search, result: SearchResult) -> dict[str, Any]:
    """The response's `tts` object: every candidate with its score and the votes its answer got."""
    votes = Tally(c.answer for c in result.candidates if c.answer is not None)
    extra: dict[str, Any] = {
        "strategy": search.name,
        "answer": result.answer,
        "candidates": [
            {
                "text": c.text,
                "answer": c.answer,
                "score": c.score,
                "votes": votes[c.answer] if c.answer is not None else 0,
                "tokens": c.tokens,
                "finish_reason": c.finish_reason,
            }
            for c in result.candidates
        ],
        "scorer_calls": result.usage.scorer_calls,
        "scorer_tokens": result.usage.scorer_tokens,
        "seconds": round(result.usage.seconds, 4),
    }
    if search.return_tree:
        extra["tree"] = result.tree
    return extra


@dataclass
class Answer:
    """What a finished search sends back, in either kind."""

    reasoning: str | None
    content: str
    finish_reason: str
    usage: dict[str, Any]


def answer_of(reply: Reply, result: SearchResult) -> Answer:
    """The chosen candidate as the reply: chat splits off its reasoning, completions return the
    whole text. Every token the search generated counts as completion tokens; all but the
    visible answer's count as reasoning tokens."""
    reasoning, content = (
        split_reasoning(result.text) if reply.kind == "chat" else (None, result.text)
    )
    chosen = next((c for c in result.candidates if c.text == result.text), None)
    spent = result.usage
    visible = len(reply.tokenizer.encode(content, add_special_tokens=False))
    totals = usage(
        spent.prompt_tokens,
        spent.completion_tokens,
        spent.cached_tokens,
        reasoning=max(spent.completion_tokens - visible, 0),
    )
    return Answer(reasoning, content, chosen.finish_reason if chosen else "stop", totals)


def _counts(answer: Answer) -> dict[str, Any]:
    # The per-choice `tts` object of /v1/completions, as the plain path gives it.
    cached = answer.usage["prompt_tokens_details"]["cached_tokens"]
    return {
        "completion_tokens": answer.usage["completion_tokens"],
        "cached_tokens": cached,
        "stop_reason": None,
    }


def search_response(reply: Reply, search: Search, result: SearchResult) -> dict[str, Any]:
    answer = answer_of(reply, result)
    extra = {"tts": _counts(answer)} if reply.kind == "text" else {}
    choice = reply.choice(0, answer.content, answer.finish_reason, **extra)
    if answer.reasoning is not None:
        choice["message"]["reasoning_content"] = answer.reasoning
    return reply.response([choice], answer.usage, tts=search_extra(search, result))


async def search_events(
    reply: Reply,
    search: Search,
    task: asyncio.Task,
    seconds: float,
    include_usage: bool,
    count: Callable[[dict[str, Any]], None],
) -> AsyncGenerator[str, None]:
    """`: searching` comments while the search runs, then the answer in short deltas; the last
    chunk carries the `tts` object. Closing this (a client gone) cancels the search."""
    try:
        async for comment in keepalive(task, seconds, "searching"):
            yield comment
        result = task.result()
        answer = answer_of(reply, result)
        count(answer.usage)
        if reply.kind == "chat":
            yield event(reply.chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}}]))
            if answer.reasoning is not None:
                delta = {"reasoning_content": answer.reasoning}
                yield event(reply.chunk([{"index": 0, "delta": delta}]))
        for start in range(0, len(answer.content), PIECE):
            piece = answer.content[start : start + PIECE]
            yield event(reply.chunk([reply.choice(0, piece, None, delta=True)]))
        extra = {"tts": _counts(answer)} if reply.kind == "text" else {}
        last = reply.choice(0, "", answer.finish_reason, delta=True, **extra)
        yield event(reply.chunk([last], tts=search_extra(search, result)))
        if include_usage:
            yield event(reply.chunk([], usage=answer.usage))
        yield DONE
    except Exception as error:  # after the 200: report it in the stream, as OpenAI does
        yield error_event(error)
    finally:
        task.cancel()
