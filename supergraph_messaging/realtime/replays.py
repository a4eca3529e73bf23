"""Subscribes and resumes that share their reads: after a restart, thousands of clients come back at once.

:class:`SharedPositions`: a subscribe needs each channel's position as of
after its route went live. One read runs at a time; the subscribes that
ask meanwhile join the next one (each joined before that read began, so
each is served by a read made after it went live): a storm of 10,000
subscribes makes a few hundred script calls, not 10,000 (that call was an
eighth of a subscribe's server time).

:class:`SharedReplays`: a resume needs every event after the client's
position up to the channel's position as of when its route went live (read
after it did, by :meth:`~.hub.Hub.add`): later events reach the route live,
held until the replay is sent. A read made for another resume covers it when it read at
least that far in the same epoch, so it is reused: its decoded events, and
their JSON for each field list. After a server restart under 10,000
clients at one event a second, the resumes cost about one read per event
published, not one read (and one decode and encode per event) per client.

Only resumes without a raw prefilter share (a prefilter drops events
before they are decoded, so its read is the route's own); a read that
could not be filled (``None``: Redis failing, history gone) is never
reused.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from supergraph_messaging.delivery.history import Missed, Position, Prefilter, current, fill
from supergraph_messaging.realtime.protocol import projected

#: Seconds a read stays reusable, and how many are kept (one per channel and position resumed from).
TTL = 10.0
MAX_ENTRIES = 256
#: Reads a resume waits for before it makes its own (each later than the one before).
SHARE_TRIES = 3


class SharedPositions:
    """Channels' current positions, read once for all the subscribes that ask before the read starts."""

    def __init__(self, reads: asyncio.Semaphore) -> None:
        self._reads = reads
        self._turn = asyncio.Lock()
        self._next: tuple[set[str], asyncio.Task[dict[str, Position]]] | None = None
        self.reads = 0  # reads made (each served every subscribe that joined it)

    async def read(self, conn: Any, channels: list[str]) -> dict[str, Position]:
        """Each of ``channels``' position, read after this call (so after the caller's route went live)."""
        if not channels:
            return {}
        batch = self._next
        if batch is None:
            wanted: set[str] = set()
            task = asyncio.get_running_loop().create_task(self._read(conn, wanted))
            task.add_done_callback(_retrieved)  # a failed read whose callers all left is not "never retrieved"
            batch = self._next = (wanted, task)
        batch[0].update(channels)
        # shield: a subscribe whose client left must not cancel the read others wait for.
        found = await asyncio.shield(batch[1])
        return {channel: found[channel] for channel in channels}

    async def _read(self, conn: Any, wanted: set[str]) -> dict[str, Position]:
        async with self._turn:  # one read at a time: the subscribes that ask meanwhile join the next
            self._next = None  # from here on, callers join the next read: this one may be too early for them
            self.reads += 1
            async with self._reads:
                return await current(conn, sorted(wanted))


def _retrieved(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


class Replay:
    """One read of a channel after a position, and its events' JSON per field list (encoded once)."""

    __slots__ = ("_texts", "found")

    def __init__(self, found: Missed) -> None:
        self.found = found
        self._texts: dict[tuple[str, ...] | None, list[str]] = {}

    def texts(self, fields: tuple[str, ...] | None) -> list[str]:
        """Each event as a subscription with ``fields`` sends it, in order."""
        texts = self._texts.get(fields)
        if texts is None:
            texts = self._texts[fields] = [projected(fields, data) for _position, data in self.found.events]
        return texts


class SharedReplays:
    """The recent reads of one hub, by (channel, position, limit, bytes)."""

    def __init__(self, reads: asyncio.Semaphore) -> None:
        self._reads = reads  # held by a read only, never by the resumes waiting for a shared one
        self._entries: dict[tuple[Any, ...], tuple[float, asyncio.Task[Replay | None]]] = {}
        self.reads = 0  # reads made (the rest were shared)

    async def replay(self, conn: Any, channel: str, position: Position | None, live: Position | None, limit: int,
                     max_bytes: int, prefilter: Prefilter | None) -> Replay | None:
        """The events of ``channel`` after ``position`` up to at least ``live``; None if they cannot be had."""
        if prefilter is not None or position is None or live is None:
            return await self._read(conn, channel, position, limit, max_bytes, prefilter)
        key = (channel, position, limit, max_bytes)
        for _ in range(SHARE_TRIES):
            entry = self._entries.get(key)
            if entry is None or time.monotonic() - entry[0] >= TTL:
                break
            replay = await self._result(entry[1])
            if replay is not None and replay.found.upto >= live[0] and live[1] == position[1]:
                return replay
            if self._entries.get(key) is entry:
                break  # too early for this resume, and no later read under way: make one
            # Another resume that found the same read too early made a later one: share that.
        task = asyncio.get_running_loop().create_task(self._read(conn, channel, position, limit, max_bytes))
        self._forget_old()
        self._entries[key] = (time.monotonic(), task)
        return await self._result(task)

    async def _read(self, conn: Any, channel: str, position: Position | None, limit: int, max_bytes: int,
                    prefilter: Prefilter | None = None) -> Replay | None:
        self.reads += 1
        async with self._reads:
            found = await fill(conn, channel, position, limit, max_bytes, prefilter)
        return None if found is None else Replay(found)

    @staticmethod
    async def _result(task: asyncio.Task[Replay | None]) -> Replay | None:
        # shield: a resume whose client left must not cancel the read others wait for.
        result: Replay | None = await asyncio.shield(task)
        return result

    def _forget_old(self) -> None:
        now = time.monotonic()
        for key in [k for k, (at, task) in self._entries.items() if task.done() and now - at >= TTL]:
            del self._entries[key]
        while len(self._entries) >= MAX_ENTRIES:
            del self._entries[next(iter(self._entries))]
