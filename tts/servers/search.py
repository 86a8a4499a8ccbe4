"""Requests that ask for more thinking: a `tts` object or a `reasoning_effort` level picks a
search strategy, which solves the request's problem with the server's backend and PRM.

The model is prompted with what the client sent, as a plain request would be: chat messages
(system messages and earlier turns included) through the model's chat template, completions'
prompt text as it is. The PRM judges steps against the problem: the last user message, or the
prompt text. Every option that multiplies a search's work is held to a server limit, and the
tokens a search generates in all to `max_search_tokens`, enforced while it runs. Every request
field is honoured or refused by name (SEARCH_FIELDS): the sampling fields become the strategy's
options, so `stop` ends each candidate where it would end a plain sample.
"""

from __future__ import annotations

import asyncio
from collections import Counter as Tally
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

from tts.engine import Backend
from tts.errors import TTSError
from tts.search import SearchResult, Strategy, make_strategy
from tts.search.budget import TokenBudget
from tts.servers.config import ServerConfig
from tts.servers.errors import APIError
from tts.servers.plain import chat_prompt
from tts.servers.replies import Reply, usage
from tts.servers.schemas import NO_OPS, ChatRequest, CompletionRequest
from tts.servers.streaming import DONE, error_event, event, keepalive
from tts.verifiers import Scorer

PIECE = 32  # characters per streamed delta of a finished answer


@dataclass
class Search:
    """A planned search: the strategy built from the request, what it solves (`problem`, for the
    PRM) and is prompted with (`prompt`, the request as sent), what to return, and once it runs,
    the budget that caps its generated tokens at `token_budget`."""

    name: str
    strategy: Strategy
    return_tree: bool
    problem: str
    prompt: str
    token_budget: int
    budget: TokenBudget | None = None

    async def run(self, backend: Backend, scorer: Scorer | None) -> SearchResult:
        self.budget = TokenBudget(backend, self.token_budget)
        return await self.strategy.solve(self.problem, self.budget, scorer, prompt=self.prompt)

    @property
    def stopped(self) -> str | None:
        """Why the search ended early: "budget" when max_search_tokens cut it short, None when
        it ran its course."""
        return "budget" if self.budget is not None and self.budget.exhausted else None


@dataclass(frozen=True)
class Passed:
    """The field becomes the strategy's option `option`: every sample the search draws obeys
    it, as the one sample of a plain request would."""

    option: str


@dataclass(frozen=True)
class Refused:
    """A search cannot honour the field: any value but its default is refused by name."""

    why: str


# "served": it works in a search as in any request (the prompt, the model, streaming, the search
# itself; the unimplemented features of schemas.NO_OPS reach here only as their no-op value).
SERVED = "served"
NO_LOGPROBS = Refused("the answer is chosen among samples and has no log-probabilities of its own")

# How a search treats every field of a request body (schemas.py), so that none is ignored.
SEARCH_FIELDS: dict[str, str | Passed | Refused] = {
    "model": SERVED,
    "messages": SERVED,
    "prompt": SERVED,
    "tts": SERVED,
    "reasoning_effort": SERVED,
    "stream": SERVED,
    "stream_options": SERVED,
    "stream_options.include_usage": SERVED,
    "user": SERVED,
    **dict.fromkeys(NO_OPS, SERVED),
    "temperature": Passed("temperature"),
    "top_p": Passed("top_p"),
    "top_k": Passed("top_k"),
    "min_p": Passed("min_p"),
    "seed": Passed("seed"),
    "stop": Passed("stop"),
    "stop_token_ids": Passed("stop_token_ids"),
    "max_tokens": Passed("max_tokens"),
    "max_completion_tokens": Passed("max_tokens"),  # after max_tokens: it wins, as in sampling
    "n": Refused("a search returns one answer; ask for more candidates with tts.n"),
    # before logprobs: echo with logprobs is lm-eval's scoring, refused as echo
    "echo": Refused("the model is prompted with the request as sent, never echoed"),
    "logprobs": NO_LOGPROBS,
    "top_logprobs": NO_LOGPROBS,
    "return_tokens_as_token_ids": NO_LOGPROBS,
    "return_token_ids": Refused("the answer has no token ids of its own"),
    "ignore_eos": Refused("a solution ends where the model ends it"),
    "stream_options.continuous_usage_stats": Refused(
        "a search streams its answer once it is done: no running usage"
    ),
}


def request_options(request: ChatRequest | CompletionRequest) -> dict[str, Any]:
    """The strategy options the request's own fields give (SEARCH_FIELDS); a field a search
    cannot honour, set to anything but its default, is refused by name."""
    options: dict[str, Any] = {}
    for name, handling in SEARCH_FIELDS.items():
        *parents, field = name.split(".")
        owner = request
        for parent in parents:
            owner = getattr(owner, parent)
        if owner is None or field not in type(owner).model_fields:
            continue  # the other endpoint's field, or no stream_options
        value = getattr(owner, field)
        if value == type(owner).model_fields[field].get_default(call_default_factory=True):
            continue
        if isinstance(handling, Refused):
            message = f"{name} is not supported with a search (tts, reasoning_effort): "
            raise APIError(400, message + handling.why, name)
        if isinstance(handling, Passed):
            options[handling.option] = value
    return options


def plan_search(
    request: ChatRequest | CompletionRequest, config: ServerConfig, tokenizer: Any
) -> Search | None:
    """The strategy a request asks for, None for plain sampling. Options layer up: the server's
    default max_tokens, the effort preset, the request's own fields, the `tts` object."""
    if request.tts is None and request.reasoning_effort is None:
        return None
    name, options = "majority", {"max_tokens": config.default_max_tokens}
    if request.reasoning_effort is not None:
        preset = config.reasoning_effort.get(request.reasoning_effort)
        if preset is None:
            levels = ", ".join(config.reasoning_effort)
            raise APIError(400, f"reasoning_effort must be one of {levels}", "reasoning_effort")
        name, options = preset.strategy, options | preset.options
    options |= request_options(request)
    if request.tts is not None:
        name = request.tts.strategy or name
        options |= request.tts.options
    if "instruction" in options:
        raise APIError(
            400,
            "tts.instruction: a search is prompted with the messages as sent; write the "
            "instruction into them",
            "tts.instruction",
        )
    try:
        strategy = make_strategy(name, **options)
    except TTSError as error:  # it names each bad or unknown option
        raise APIError(400, str(error), "tts", "invalid_value") from None
    if beyond := config.beyond_limits(strategy.config.model_dump()):
        option, message = beyond
        raise APIError(400, f"tts.{message}", f"tts.{option}")
    if isinstance(request, ChatRequest):
        prompt = chat_prompt(tokenizer, request.messages)
    else:
        prompt = request.problem
    return_tree = request.tts is not None and request.tts.return_tree
    return Search(name, strategy, return_tree, request.problem, prompt, config.max_search_tokens)


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
        "stopped": search.stopped,
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


def answer_of(reply: Reply, search: Search, result: SearchResult) -> Answer:
    """The chosen candidate as the reply: chat splits off its reasoning, completions return the
    whole text. Every token the search generated counts as completion tokens; all but the
    visible answer's count as reasoning tokens. A search the budget cut short finishes with
    "length", as a sample cut at max_tokens does."""
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
    finish = "length" if search.stopped else chosen.finish_reason if chosen else "stop"
    return Answer(reasoning, content, finish, totals)


def _counts(answer: Answer) -> dict[str, Any]:
    # The per-choice `tts` object of /v1/completions, as the plain path gives it.
    cached = answer.usage["prompt_tokens_details"]["cached_tokens"]
    return {
        "completion_tokens": answer.usage["completion_tokens"],
        "cached_tokens": cached,
        "stop_reason": None,
    }


def search_response(reply: Reply, search: Search, result: SearchResult) -> dict[str, Any]:
    answer = answer_of(reply, search, result)
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
        answer = answer_of(reply, search, result)
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
