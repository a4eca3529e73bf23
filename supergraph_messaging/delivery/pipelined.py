"""Publishing without waiting: PUBLISH commands sent now, their replies read later.

The request thread itself writes the command to the process's publishing
connection (one ``write``, see :mod:`._wire`) and never waits for the
reply. Replies are read in batches before a send (every ``READ_EVERY``
sends or ``READ_INTERVAL`` seconds), and :meth:`flush` reads the rest;
before each send one ``poll`` asks only whether Redis closed the
connection, so a send never goes to a socket the server already closed.
Replies come back in order, so each confirms the oldest unconfirmed event.

No thread, no hand-off, no round trip on the request path: a publisher
thread woken per event takes the GIL each time a request thread releases
it (an SQLite call), and under CPU contention holds it for a whole time
slice (measured: +131 µs of stalls inside ``cursor.execute`` per request).

The process's :data:`publisher` lives here, beside its class, with the
callbacks that count each event and send ``event_published``: the outbox
relay nudges through it without importing the events layer.
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import threading
import time
import weakref
from typing import Any

import redis

from supergraph_messaging import counters as operational
from supergraph_messaging.conf import conf
from supergraph_messaging.delivery._wire import ClosedBeforeSend, Wire, open_wire
from supergraph_messaging.redis.client import RedisClient, get_redis_client
from supergraph_messaging.redis.errors import REDIS_ERRORS
from supergraph_messaging.redis.keys import full_channel
from supergraph_messaging.redis.serialization import dumps, without_position
from supergraph_messaging.signals import EVENTS, event_published

logger = logging.getLogger("supergraph_messaging.events")

Event = tuple[str, dict[str, Any] | None]  # None: a raw message, confirmed without callbacks

#: Replies are read once this many sends are unconfirmed (or ``PUBLISH_QUEUE_SIZE``, if smaller)...
READ_EVERY = 64
#: ... or this many seconds after the last read, so that a quiet process's counters and
#: ``event_published`` signals are not held back for long.
READ_INTERVAL = 0.1


class _Line:
    """One thread's connection to one Redis, and the events sent on it not yet confirmed."""

    def __init__(self, client: RedisClient) -> None:
        self.client = client
        self.pid = os.getpid()
        self.conn: Any = client.publishing_connection()
        self.pending: collections.deque[Event] = collections.deque()
        self.lock = threading.Lock()
        self.wire: Wire | None = None
        self.read_by = 0.0  # time.monotonic() after which replies are read before the next send
        self.generation = client.generation  # Sentinel's switches seen when the connection was made

    def moved(self) -> bool:
        """Sentinel moved the primary since this connection was made: it may be talking to a replica, where a
        PUBLISH reaches nobody subscribed on the new primary."""
        return self.generation != self.client.generation

    def connected(self) -> bool:
        return getattr(self.conn, "_sock", None) is not None

    def current_wire(self) -> Wire | None:
        """The raw socket of the connected connection; ``None`` on TLS."""
        if self.wire is None or self.wire.sock is not self.conn._sock:
            self.wire = open_wire(self.conn)
        return self.wire

    def read_due(self) -> bool:
        """Whether to read replies before the next send.

        Reading before every send cost ~20 µs per event inside a request (an ``os.read``, parsing,
        the callbacks on a cold cache); a ``poll`` for the server's close costs one system call.
        """
        if not self.connected():
            return False
        wire = self.current_wire()
        if wire is None:  # TLS: redis-py's can_read, before every send as before
            return True
        return (len(self.pending) >= min(READ_EVERY, conf.publish_queue_size)
                or wire.closed_by_peer() or time.monotonic() >= self.read_by)

    def write(self, channel: str, data: bytes) -> None:
        """PUBLISH without reading the reply; connects first if the last connection was dropped."""
        if not self.connected():
            self.generation = self.client.generation
            self.conn.connect()
        packed = self.conn.pack_command("PUBLISH", full_channel(channel), data)
        wire = self.current_wire()
        if wire is None:
            self.conn.send_packed_command(packed)
        else:
            wire.send(b"".join(packed))


class PipelinedPublisher:
    """One connection per process, shared by every thread under a lock.

    One connection, not one per thread: threads that commit changes of the
    same row one after the other must publish in that order, and only a single
    TCP stream keeps it (measured: per-thread connections reordered 338 of
    1,000 row versions while Redis was frozen for 3 s).
    """

    def __init__(self, on_published: Any, on_failed: Any) -> None:
        self._on_published = on_published
        self._on_failed = on_failed
        self._current: _Line | None = None
        self._lines: weakref.WeakSet[_Line] = weakref.WeakSet()
        self._lines_lock = threading.Lock()

    def _line(self) -> _Line:
        client = get_redis_client()
        line = self._current
        if line is not None and line.client is client and line.pid == os.getpid():
            return line
        with self._lines_lock:
            line = self._current
            if line is None or line.client is not client or line.pid != os.getpid():
                old, line = line, _Line(client)
                self._current = line
                self._lines.add(line)
                if old is not None and old.pid == os.getpid():
                    self._close(old)  # the Redis settings changed
        return line

    def publish(self, channel: str, payload: dict[str, Any]) -> None:
        """Send one event; never waits for Redis (a failure is logged and counted by the callbacks)."""
        try:
            data = dumps(without_position(payload))
        except (TypeError, ValueError) as exc:  # NaN, an object JSON cannot carry: the publisher's bug
            self._on_failed(channel, payload, str(exc), "failed")
            return
        self._send(channel, payload, data)

    def publish_raw(self, channel: str, data: bytes) -> None:
        """Send bytes as they are, uncounted: a wake-up call to another process, not an event.

        Best effort: one sent just as Redis closes the connection is lost, so the woken process polls
        as well.
        """
        self._send(channel, None, data)

    def _send(self, channel: str, payload: dict[str, Any] | None, data: bytes) -> None:
        line = self._line()
        breaker = line.client.breaker
        if not breaker.allow():
            if payload is not None:
                self._on_failed(channel, payload, f"Redis at {line.client.masked_url} is unavailable", "failed")
            return
        if line.client.sharded(channel):
            self._send_sharded(line, channel, payload, data)
            return
        with line.lock:
            if line.moved():
                self._follow_switch(line)
            if line.read_due():
                try:
                    self._read(line, wait=0.0)
                except REDIS_ERRORS as exc:
                    # A connection the server closed (Redis restarted): the send below reconnects.
                    self._fail_pending(line, exc)
            if len(line.pending) >= conf.publish_queue_size:
                if payload is not None:
                    self._on_failed(channel, payload, f"{len(line.pending)} published events are still "
                                    "unconfirmed by Redis", "dropped")
                return
            try:
                try:
                    line.write(channel, data)
                except ClosedBeforeSend as exc:  # closed since the last read; nothing of this one went out
                    self._fail_pending(line, exc)
                    line.write(channel, data)
            except REDIS_ERRORS as exc:
                self._fail_pending(line, exc)  # a half-written command: nothing more can be read on it
                breaker.record_failure(exc)
                if payload is not None:
                    self._on_failed(channel, payload, str(exc), "failed")
                return
            line.pending.append((channel, payload))
        if breaker.failing:
            breaker.record_success()

    def _follow_switch(self, line: _Line) -> None:
        """Confirm what the old primary answered, then close the connection: the next write connects to the
        primary the sentinels announced."""
        try:
            self._read(line, wait=0.0)
        except REDIS_ERRORS as exc:
            self._fail_pending(line, exc)
        self._fail_pending(line, redis.ConnectionError("Sentinel moved the primary"))
        line.generation = line.client.generation

    def _send_sharded(self, line: _Line, channel: str, payload: dict[str, Any] | None, data: bytes) -> None:
        """``SPUBLISH`` through the slot map, waiting for the reply: with sharded Pub/Sub each channel has
        its own node, and one pipelined connection cannot reach them all."""
        breaker = line.client.breaker
        try:
            receivers = line.client.redis.spublish(full_channel(channel), data)
        except REDIS_ERRORS as exc:
            breaker.record_failure(exc)
            if payload is not None:
                self._on_failed(channel, payload, str(exc), "failed")
            return
        if breaker.failing:
            breaker.record_success()
        if payload is not None:
            self._on_published(channel, payload, int(receivers))

    def _read(self, line: _Line, wait: float) -> None:
        """Read the replies that have arrived, waiting up to ``wait`` seconds for the outstanding ones.

        With nothing outstanding it still looks once: a readable connection
        then means the server closed it, and the read says so.
        """
        if not line.connected():
            return  # disconnected: what was pending on it has been failed already
        wire = line.current_wire()
        if wire is None:
            self._read_redis_py(line, wait)
            return
        now = time.monotonic()
        line.read_by = now + READ_INTERVAL
        deadline = now + wait
        while True:
            for reply in wire.replies(max(0.0, deadline - time.monotonic()) if line.pending else 0.0):
                self._confirm(line, reply)
            if wire.closed_by_peer():
                # The replies sent before the close are confirmed; the connection is dead all the same,
                # and a send on it would be lost without an error (the kernel accepts the bytes).
                wire.replies()  # reads the close and raises
            if not line.pending or time.monotonic() >= deadline:
                return

    def _read_redis_py(self, line: _Line, wait: float) -> None:
        deadline = time.monotonic() + wait
        conn = line.conn
        while True:
            remaining = max(0.0, deadline - time.monotonic()) if line.pending else 0.0
            if not conn.can_read(timeout=remaining):
                return
            try:
                reply: int | redis.ResponseError = conn.read_response()
            except redis.ResponseError as exc:
                reply = exc
            self._confirm(line, reply)

    def _confirm(self, line: _Line, reply: int | redis.ResponseError) -> None:
        """``reply`` answers the oldest event still pending."""
        if not line.pending:
            if isinstance(reply, redis.ResponseError):
                raise reply
            raise redis.ConnectionError(f"unexpected reply {reply!r} on the publishing connection")
        channel, payload = line.pending.popleft()
        if payload is None:
            return
        if isinstance(reply, redis.ResponseError):
            self._on_failed(channel, payload, str(reply), "failed")
        else:
            self._on_published(channel, payload, int(reply))

    def _fail_pending(self, line: _Line, exc: BaseException) -> None:
        """The connection broke: events sent on it may or may not have reached Redis."""
        line.conn.disconnect()
        while line.pending:
            channel, payload = line.pending.popleft()
            if payload is not None:
                self._on_failed(channel, payload, f"unconfirmed, the connection was lost ({exc})", "failed")

    def _close(self, line: _Line) -> None:
        with line.lock:
            try:
                self._read(line, wait=1.0)
            except REDIS_ERRORS as exc:
                self._fail_pending(line, exc)
            line.conn.disconnect()

    def flush(self, timeout: float = 5.0) -> bool:
        """Read every outstanding reply, of every thread; True when all events are confirmed."""
        deadline = time.monotonic() + timeout
        with self._lines_lock:
            lines = list(self._lines)
        for line in lines:
            with line.lock:
                try:
                    self._read(line, wait=max(0.0, deadline - time.monotonic()))
                except REDIS_ERRORS as exc:
                    self._fail_pending(line, exc)
        return all(not line.pending for line in lines)


#: Counters of this process, e.g. for monitoring. ``failed``: Redis was unreachable;
#: ``dropped``: ``PUBLISH_QUEUE_SIZE`` events were already waiting for Redis to confirm them.
counters = {"published": 0, "failed": 0, "dropped": 0}


def _event_id(payload: dict[str, Any]) -> Any:
    meta = payload.get("_meta")
    return meta.get("event_id") if isinstance(meta, dict) else None


def published(channel: str, payload: dict[str, Any], receivers: int) -> None:
    """Count a confirmed event and send ``event_published``."""
    counters["published"] += 1
    operational.incr(("events_published", channel))
    event_published.send(sender=EVENTS, channel=channel, payload=payload, receivers=receivers)


def failed(channel: str, payload: dict[str, Any], reason: str, kind: str) -> None:
    """Count and log an event that was not published (``kind``: ``failed`` or ``dropped``), naming it."""
    counters[kind] += 1
    operational.incr(("events_failed", channel, kind))
    verb = "Dropped" if kind == "dropped" else "Could not publish"
    logger.error("%s event %s on %r: %s", verb, _event_id(payload), channel, reason)


#: The process's publisher for events sent after commit without waiting (``PUBLISH_IN_BACKGROUND``),
#: and for the outbox relay's nudges.
publisher = PipelinedPublisher(published, failed)
atexit.register(publisher.flush)
