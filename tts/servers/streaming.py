"""Server-sent events as OpenAI streams them: `data: {json}` per chunk, `data: [DONE]` at the
end, comment lines (ignored by clients) to keep a connection alive while a search runs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from tts.errors import TTSError
from tts.servers.errors import APIError, log

DONE = "data: [DONE]\n\n"


def event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def error_event(error: Exception) -> str:
    """A failure after the 200 was sent, as the stream's last event: the error object (which
    the official client raises as an APIError), then the terminator, as vLLM ends it."""
    if isinstance(error, APIError):
        failure = error
    elif isinstance(error, TTSError | ValueError):
        failure = APIError(400, str(error), code="invalid_value")
    else:
        log.error("a stream failed", exc_info=error)
        failure = APIError(500, "internal server error", code="internal_error")
    return event(failure.body()) + DONE


async def keepalive(task: asyncio.Future, seconds: float, comment: str) -> AsyncIterator[str]:
    """A comment line at once (the client and any proxy see the stream open however soon the
    task ends), then one every `seconds` until `task` is done. Writing them is also how a
    disconnect shows up while nothing else is sent."""
    yield f": {comment}\n\n"
    while not task.done():
        await asyncio.wait({task}, timeout=seconds)
        if not task.done():
            yield f": {comment}\n\n"


class EventStream(StreamingResponse):
    """An SSE response that always closes its generator and then calls `on_close`, however it
    ends: finished, client gone (Starlette cancels the send loop) or never started. Closing the
    generator runs its `finally` blocks, which cancel the search or close the backend stream."""

    def __init__(self, events: AsyncGenerator[str, None], on_close: Callable[[], None]) -> None:
        super().__init__(
            events,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self.events, self.on_close = events, on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.events.aclose()
            self.on_close()
