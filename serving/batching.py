"""Adaptive batching across concurrent requests: whatever arrives while the model is busy is scored together.

One forward pass runs at a time. Requests that arrive while it runs wait in a queue, and when it finishes
they all go into the next pass (up to ``max_batch_size`` customers), so the batch size follows the load: one
client alone gets batch size 1 and no added wait; 64 concurrent clients share passes of many customers.
``max_wait_ms`` can hold a pass back a little for more requests to join (0 = never wait).

BentoML's ``@bentoml.api(batchable=True)`` merges requests *before* the API function sees them, so one
request's bad input would fail every request merged with it. Journey validates each request on its own first
(a 4xx names the customer, the event index and the field) and only then hands it to this batcher, so a pass
only ever holds valid requests. When a pass fails anyway (a server bug), each request in it is retried alone
so that the failure stays with the request that caused it.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class BatchStats:
    """Counters a benchmark or /metadata can read."""

    batches: int = 0  # forward passes run
    items: int = 0  # requests served
    customers: int = 0  # customers scored
    largest: int = 0  # most customers in one pass
    busy_seconds: float = 0.0  # time spent inside passes
    sizes: collections.Counter = field(default_factory=collections.Counter)  # customers per pass -> passes

    @property
    def mean_batch(self) -> float:
        return self.customers / self.batches if self.batches else 0.0


class AdaptiveBatcher(Generic[Item, Result]):
    """Runs ``process(items) -> results`` on one worker thread over batches of queued items."""

    def __init__(
        self,
        process: Callable[[Sequence[Item]], Sequence[Result]],
        size_of: Callable[[Item], int],
        max_batch_size: int,
        max_wait_ms: float = 0.0,
    ) -> None:
        self.process = process
        self.size_of = size_of  # customers in an item
        self.max_batch_size = max_batch_size  # customers per pass; one larger item still runs, alone
        self.max_wait = max_wait_ms / 1000.0
        self.stats = BatchStats()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journey-batch")
        self._queue: collections.deque[tuple[Item, asyncio.Future]] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._worker: asyncio.Task | None = None

    async def submit(self, item: Item) -> Result:
        """Queue ``item``; returns its result once the pass holding it has run."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (tests run several): start afresh on it
            self._loop, self._worker = loop, None
            self._queue.clear()
        future: asyncio.Future = loop.create_future()
        self._queue.append((item, future))
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            if self.max_wait and self._queued_size() < self.max_batch_size:
                await asyncio.sleep(self.max_wait)
            taken, size = [], 0
            while self._queue and (not taken or size + self.size_of(self._queue[0][0]) <= self.max_batch_size):
                item, future = self._queue.popleft()
                if future.cancelled():  # the client went away
                    continue
                taken.append((item, future))
                size += self.size_of(item)
            if not taken:
                continue
            started = time.perf_counter()
            outcomes = await loop.run_in_executor(self._executor, self._run, [item for item, _ in taken])
            self._record(len(taken), size, time.perf_counter() - started)
            for (_, future), outcome in zip(taken, outcomes, strict=True):
                if future.done():
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

    def _run(self, items: list[Item]) -> list[Result | BaseException]:
        try:
            return list(self.process(items))
        except Exception as error:
            if len(items) == 1:
                return [error]
        outcomes: list[Result | BaseException] = []
        for item in items:  # keep a failure with the request that caused it
            try:
                outcomes.extend(self.process([item]))
            except Exception as error:
                outcomes.append(error)
        return outcomes

    def _queued_size(self) -> int:
        return sum(self.size_of(item) for item, _ in self._queue)

    def _record(self, items: int, customers: int, seconds: float) -> None:
        stats = self.stats
        stats.batches += 1
        stats.items += items
        stats.customers += customers
        stats.largest = max(stats.largest, customers)
        stats.busy_seconds += seconds
        stats.sizes[customers] += 1

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
