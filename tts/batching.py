"""Concurrent calls into one model, batched: the pattern the `hf` backend and the PRM scorers share.

Callers `await queue.submit(item)` from any number of coroutines. Items that arrive while a batch
runs wait; the next batch takes what `take` picks from the waiting items, and `run` computes it
on the device thread (`tts.devices.DEVICE_THREAD`), so the event loop keeps serving meanwhile.
A caller cancelled while waiting is dropped before its batch; a batch that raises fails its own
callers only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

from tts.devices import DEVICE_THREAD

Item = TypeVar("Item")
Result = TypeVar("Result")


class BatchQueue(Generic[Item, Result]):
    """run: a batch of items -> one result per item, called in the worker thread.
    take: the waiting items -> the indices of those the next batch takes (at least one)."""

    def __init__(
        self, run: Callable[[list[Item]], list[Result]], take: Callable[[list[Item]], list[int]]
    ) -> None:
        self._run, self._take = run, take
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: list[tuple[Item, asyncio.Future]] = []
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None

    async def submit(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            # First call, or a new event loop (each asyncio.run makes one): the worker and its
            # queue belong to the loop they were made in.
            self._loop, self._waiting, self._wake = loop, [], asyncio.Event()
            self._worker = loop.create_task(self._serve())  # held: the loop keeps weak refs
        future = loop.create_future()
        self._waiting.append((item, future))
        self._wake.set()
        return await future

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while batch := self._next_batch():
                items = [item for item, _ in batch]
                try:
                    results = await loop.run_in_executor(DEVICE_THREAD, self._run, items)
                except Exception as error:  # a failed batch fails its callers, not the worker
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                for (_, future), result in zip(batch, results):
                    if not future.done():
                        future.set_result(result)

    def _next_batch(self) -> list[tuple[Item, asyncio.Future]]:
        self._waiting = [(item, f) for item, f in self._waiting if not f.done()]  # cancelled
        if not self._waiting:
            return []
        chosen = set(self._take([item for item, _ in self._waiting]))
        batch = [entry for i, entry in enumerate(self._waiting) if i in chosen]
        self._waiting = [entry for i, entry in enumerate(self._waiting) if i not in chosen]
        return batch
