"""The HTTP routes: parse and check a request, then hand it to plain sampling or to a search.

Everything a route does before its first byte (validation, limits, model name, admission, the
first snapshot of a stream) can still fail with a proper 4xx; after that, failures travel inside
the stream as OpenAI's error events.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import ValidationError

from tts import __version__
from tts.engine import Backend
from tts.servers.config import ServerConfig
from tts.servers.errors import APIError, from_validation, install_handlers
from tts.servers.lifecycle import Admission, unless_disconnected
from tts.servers.metrics import Metrics, MetricsMiddleware
from tts.servers.plain import (
    chat_prompt,
    generate_all,
    open_stream,
    plain_events,
    plain_response,
    plain_usage,
    sampling_params,
)
from tts.servers.replies import Reply
from tts.servers.schemas import ChatRequest, CompletionRequest, check_json
from tts.servers.search import plan_search, search_events, search_response
from tts.servers.streaming import EventStream
from tts.verifiers import Scorer


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise APIError(413, f"the body exceeds {limit} bytes", code="request_too_large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise APIError(413, f"the body exceeds {limit} bytes", code="request_too_large")
    return bytes(body)


def check_content_type(request: Request) -> None:
    """Only JSON bodies are served. A browser sends text/plain, form or multipart bodies (or a
    Blob with no type) to any origin without asking first: refusing them keeps a web page from
    spending a keyless localhost server's compute."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json":
        shown = media_type or "none"
        raise APIError(
            415,
            f"the body must be JSON, sent with Content-Type: application/json (got {shown})",
            code="unsupported_media_type",
        )


def create_app(backend: Backend, scorer: Scorer | None, config: ServerConfig) -> FastAPI:
    """An app serving `backend` (and `scorer` for guided search) under `config`'s limits."""
    admission = Admission(config.max_concurrency, config.max_queue)
    metrics = Metrics(backend, lambda: admission.waiting, lambda: admission.running)
    app = FastAPI(title="tts", version=__version__)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    install_handlers(app)
    started = int(time.time())

    def authorize(request: Request) -> None:
        if config.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        valid = scheme.lower() == "bearer" and secrets.compare_digest(
            token.strip().encode(), config.api_key.encode()
        )
        if not valid:
            raise APIError(
                401,
                "a valid API key is required (Authorization: Bearer KEY)",
                code="invalid_api_key",
            )

    def count(totals: dict[str, Any]) -> None:
        cached = totals["prompt_tokens_details"]["cached_tokens"]
        metrics.count_tokens(totals["prompt_tokens"], totals["completion_tokens"], cached)

    async def parse(request: Request, schema: type[ChatRequest | CompletionRequest]) -> Any:
        # The body is read whatever is wrong with the request, so that the connection stays
        # usable for the client's next request.
        body = await read_body(request, config.max_body_bytes)
        check_content_type(request)
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: nested too deep to decode
            raise APIError(400, "the body is not valid JSON", code="invalid_json") from None
        if not isinstance(data, dict):
            raise APIError(400, "the body must be a JSON object", code="invalid_json")
        check_json(data)
        try:
            parsed = schema.model_validate(data)
        except ValidationError as error:
            raise from_validation(error) from None
        if parsed.model is not None:
            check_model(parsed.model)
        return parsed

    def check_model(name: str) -> None:
        if name != config.model_name:
            raise APIError(
                404,
                f"the model {name!r} does not exist; this server serves {config.model_name!r}",
                "model",
                "model_not_found",
            )

    def model_card() -> dict[str, Any]:
        return {"id": config.model_name, "object": "model", "created": started, "owned_by": "tts"}

    async def answer(request: Request, parsed: ChatRequest | CompletionRequest) -> Response:
        kind = "chat" if isinstance(parsed, ChatRequest) else "text"
        reply = Reply(
            kind,
            config.model_name,
            backend.tokenizer,
            parsed.return_tokens_as_token_ids,
            token_ids=parsed.return_token_ids,
        )
        search = plan_search(parsed, config, backend.tokenizer)
        if search is None:
            params = sampling_params(parsed, config)
            prompts = (
                [chat_prompt(backend.tokenizer, parsed.messages)]
                if kind == "chat"
                else parsed.prompts
            )
        ticket = admission.reserve()
        try:
            await unless_disconnected(request, ticket.start())
            if search is not None:
                task = asyncio.ensure_future(search.run(backend, scorer))
                if parsed.stream:
                    # One turn of the loop runs the strategy to its first await: what it
                    # rejects at once (no PRM, a prompt too long) still gets a 4xx.
                    await asyncio.sleep(0)
                    if task.done():
                        task.result()
                    events = search_events(
                        reply, search, task, config.keepalive_seconds, parsed.include_usage, count
                    )
                    response, ticket = EventStream(events, ticket.close), None
                    return response
                result = await unless_disconnected(request, task)
                body = search_response(reply, search, result)
                count(body["usage"])
                return JSONResponse(body)
            if parsed.stream:
                snapshots = open_stream(backend, prompts, params)
                first = await unless_disconnected(request, anext(snapshots))
                options = parsed.stream_options
                events = plain_events(reply, snapshots, first, params, options, count)
                response, ticket = EventStream(events, ticket.close), None
                return response
            completions = await unless_disconnected(request, generate_all(backend, prompts, params))
            count(plain_usage(completions, params.n))
            echo = prompts if kind == "text" and parsed.echo else None
            return JSONResponse(plain_response(reply, completions, params, echo))
        finally:
            if ticket is not None:  # a stream's ticket is closed by its response instead
                ticket.close()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", dependencies=[Depends(authorize)])
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models", dependencies=[Depends(authorize)])
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{name:path}", dependencies=[Depends(authorize)])
    async def model(name: str) -> dict[str, Any]:
        check_model(name)
        return model_card()

    @app.post("/v1/chat/completions", dependencies=[Depends(authorize)])
    async def chat_completions(request: Request) -> Response:
        return await answer(request, await parse(request, ChatRequest))

    @app.post("/v1/completions", dependencies=[Depends(authorize)])
    async def completions(request: Request) -> Response:
        return await answer(request, await parse(request, CompletionRequest))

    return app
