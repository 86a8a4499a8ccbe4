"""How a request waits, runs and ends: a bounded queue in front of the engine, and cancellation
when the client goes away.

The engine batches whatever is in flight, so admitting requests is only about memory and
latency: at most `max_running` are served at once, `max_waiting` more wait for a slot, and
anything beyond gets 429 with Retry-After at once instead of piling up. A request whose client
disconnects is cancelled, and cancelling a backend call aborts its sequences and frees their
KV blocks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request

from tts.servers.errors import APIError

T = TypeVar("T")


class Admission:
    """Slots for running requests and a bounded queue for those waiting."""

    def __init__(self, max_running: int, max_waiting: int) -> None:
        self.capacity = max_running + max_waiting
        self.slots = asyncio.Semaphore(max_running)
        self.running = 0
        self.waiting = 0

    def reserve(self) -> Ticket:
        """A place in the queue, or 429 when every slot and queue place is taken."""
        if self.running + self.waiting >= self.capacity:
            raise APIError(
                429,
                "the server is at capacity; retry shortly",
                code="rate_limit_exceeded",
                headers={"Retry-After": "1"},
            )
        self.waiting += 1
        return Ticket(self)


class Ticket:
    """One request's place: waiting, then running, then closed (closing twice is harmless, so
    every exit path may close it)."""

    def __init__(self, admission: Admission) -> None:
        self.admission = admission
        self.state = "waiting"

    async def start(self) -> None:
        await self.admission.slots.acquire()
        self.admission.waiting -= 1
        self.admission.running += 1
        self.state = "running"

    def close(self) -> None:
        if self.state == "running":
            self.admission.running -= 1
            self.admission.slots.release()
        elif self.state == "waiting":
            self.admission.waiting -= 1
        self.state = "closed"


async def _disconnected(request: Request) -> None:
    # Once the body is read, the server's next receive() message is the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it if the client disconnects first (then 499: nobody reads it).

    The request body must have been read already.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            # Let the cancellation run (it aborts the engine's work) before answering.
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        raise APIError(499, "the client closed the request", code="client_closed_request")
    return task.result()
