"""Running handlers off the receive loop: one ordered queue per channel, bounded in total.

The first release awaited every handler inside the receive loop, so one sync
handler sleeping 10 s delayed every other channel (cache invalidations
included) by 10 s, and while it slept nothing read the socket: Redis hit its
Pub/Sub output-buffer limit, disconnected the worker and 94,890 of 100,000
messages were lost with one log line. Here the receive loop only decodes and
queues; each channel has its own worker task (so order within a channel is
kept), sync handlers share a bounded number of threads, an optional timeout
stops waiting for a stuck handler, and a full queue drops loudly, naming the
channel. On shutdown the queues are drained before the worker exits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

logger = logging.getLogger("supergraph_messaging.pubsub")

Runner = Callable[[str, str, Any], Awaitable[None]]

#: Log a channel's drops at most this often (seconds).
DROP_LOG_INTERVAL = 1.0


class ChannelDispatcher:
    def __init__(self, run: Runner, limit: int) -> None:
        self._run = run
        self.limit = limit
        self._queues: dict[str, asyncio.Queue[tuple[str, Any]]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._queued = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.dropped: dict[str, int] = {}
        self._drop_logged: dict[str, float] = {}

    @property
    def queued(self) -> int:
        """Messages received and not yet handled (queued or running)."""
        return self._queued

    def put(self, key: str, channel: str, data: Any) -> int:
        """Queue a message for ``key``'s handlers; returns the channel's queue length (0: dropped,
        counted and logged because ``WORKER_QUEUE_SIZE`` messages were already waiting)."""
        if self._queued >= self.limit:
            self._drop(channel)
            return 0
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = asyncio.Queue()
            self._workers[key] = asyncio.get_running_loop().create_task(self._work(queue), name=f"handlers:{key}")
        self._queued += 1
        self._idle.clear()
        queue.put_nowait((channel, data))
        return queue.qsize()

    def _drop(self, channel: str) -> None:
        count = self.dropped[channel] = self.dropped.get(channel, 0) + 1
        now = time.monotonic()
        if now - self._drop_logged.get(channel, 0.0) >= DROP_LOG_INTERVAL:
            self._drop_logged[channel] = now
            logger.error(
                "Dropped a message on %r (%d dropped on it so far): %d messages are already waiting for "
                "handlers (WORKER_QUEUE_SIZE). A handler is too slow for its channel's rate.",
                channel, count, self._queued)

    async def _work(self, queue: asyncio.Queue[tuple[str, Any]]) -> None:
        key = asyncio.current_task().get_name().removeprefix("handlers:")  # type: ignore[union-attr]
        while True:
            channel, data = await queue.get()
            try:
                await self._run(key, channel, data)
            finally:
                self._queued -= 1
                if not self._queued:
                    self._idle.set()

    async def drain(self, timeout: float) -> bool:
        """Wait until every received message was handled; True if that happened within ``timeout``."""
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            logger.error("Stopping with %d message(s) still unhandled after %.0f s.", self._queued, timeout)
            return False
        return True

    async def close(self) -> None:
        workers = list(self._workers.values())
        for worker in workers:
            worker.cancel()
        for worker in workers:
            try:
                await worker
            except asyncio.CancelledError:
                pass
        self._workers.clear()
        self._queues.clear()
        self._queued = 0
        self._idle.set()
