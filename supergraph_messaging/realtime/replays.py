"""Resumes that share their reads: after a restart, thousands of clients resume from the same position.

A resume needs every event after the client's position up to the channel's
position as of when its route went live (read after it did, by
:meth:`~.hub.Hub.add`): later events reach the route live, held until the
replay is sent. A read made for another resume covers it when it read at
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

from supergraph_messaging.delivery.history import Missed, Position, Prefilter, fill
from supergraph_messaging.realtime.protocol import projected

#: Seconds a read stays reusable, and how many are kept (one per channel and position resumed from).
TTL = 10.0
MAX_ENTRIES = 256


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

    def __init__(self) -> None:
        self._entries: dict[tuple[Any, ...], tuple[float, asyncio.Task[Replay | None]]] = {}
        self.reads = 0  # reads made (the rest were shared)

    async def replay(self, conn: Any, channel: str, position: Position | None, live: Position | None, limit: int,
                     max_bytes: int, prefilter: Prefilter | None) -> Replay | None:
        """The events of ``channel`` after ``position`` up to at least ``live``; None if they cannot be had."""
        if prefilter is not None or position is None or live is None:
            self.reads += 1
            return await self._read(conn, channel, position, limit, max_bytes, prefilter)
        key = (channel, position, limit, max_bytes)
        entry = self._entries.get(key)
        if entry is not None and time.monotonic() - entry[0] < TTL:
            replay = await self._result(entry[1])
            if replay is not None and replay.found.upto >= live[0] and live[1] == position[1]:
                return replay
        self.reads += 1
        task = asyncio.get_running_loop().create_task(self._read(conn, channel, position, limit, max_bytes))
        self._forget_old()
        self._entries[key] = (time.monotonic(), task)
        return await self._result(task)

    @staticmethod
    async def _read(conn: Any, channel: str, position: Position | None, limit: int, max_bytes: int,
                    prefilter: Prefilter | None = None) -> Replay | None:
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
