"""The near cache: hot values in process memory, kept coherent by Redis (``local=True``).

A hit from Redis costs a round trip (about 75 us here); a hit from memory
costs a dict lookup and a JSON decode. What makes a local copy safe to serve
is Redis's server-assisted client-side caching: one connection per process
runs ``CLIENT TRACKING on REDIRECT <itself> BCAST PREFIX ...`` for the
prefixes of the ``local=True`` templates and subscribes to
``__redis__:invalidate``; every write, delete, expiry or flush of a key under
those prefixes, by any process, reaches it as an invalidation message, and
the copy is dropped.

BCAST, not the default per-key mode: per-key tracking follows the keys each
tracking connection *read*, so every pooled connection would need tracking
turned on and redirected, and redirected again each time the invalidation
connection reconnects. BCAST needs one connection and no change to the
pools; the cost is that writes to keys nobody here holds are announced too
(the prefixes keep that to the templates that asked for it).

Three races are closed here:
- a read whose reply was overtaken by the invalidation of a later write
  (the two travel on different connections): a read registers itself before
  it goes to Redis, an invalidation of its key meanwhile is remembered, and
  the value is then not kept;
- the invalidation connection lost (killed, Redis restarted): every copy is
  dropped at once and nothing is served or kept until it is subscribed
  again; a connection that stops answering is found by a PING;
- a connection that stalls without an error (a network that drops packets,
  a frozen proxy): invalidations stop arriving and nothing says so. A copy is
  served only while the connection was heard from (a message, or the answer
  to the PING sent after :data:`IDLE` of silence) within :data:`MAX_SILENCE`;
  after that, reads go to Redis until it answers again. So a change reaches
  readers at most ``MAX_SILENCE`` late, however the link fails (it was up to
  1.49 s with only the PING's timeout);
- a key that expires in Redis: expiry is announced only when Redis gets to
  delete the key, so each copy also carries the key's remaining TTL.

Values are kept encoded and decoded on every hit: each caller gets its own
object, and one that mutates its result cannot change what others read.
Not on a Redis Cluster yet (tracking is per node): there ``local=True``
reads go to Redis as without it.
"""

from __future__ import annotations

import collections
import contextlib
import fnmatch
import logging
import socket
import threading
import time
from collections.abc import Iterable
from typing import Any

import redis

from supergraph_messaging.conf import conf
from supergraph_messaging.redis.client import RedisClient
from supergraph_messaging.redis.client import _clients as registered_clients
from supergraph_messaging.redis.errors import REDIS_ERRORS

logger = logging.getLogger("supergraph_messaging.cache")

CHANNEL = b"__redis__:invalidate"
_LOST: tuple[type[BaseException], ...] = (*REDIS_ERRORS, OSError)
RECONNECT_MIN = 0.05
RECONNECT_MAX = 2.0
IDLE = 0.2  # seconds without a message before the connection is asked a PING
#: Copies are served only while the invalidation connection was heard from this recently (seconds).
MAX_SILENCE = 0.5


class NearCache:
    """The near cache of one Redis client (one URL), shared by every thread and event loop."""

    def __init__(self, client: RedisClient) -> None:
        self.client = client
        self._lock = threading.Lock()
        self._data: collections.OrderedDict[str, tuple[bytes, float]] = collections.OrderedDict()
        self._watching = False
        #: When the invalidation connection last delivered anything (monotonic): see MAX_SILENCE.
        self._heard = 0.0
        self._seq = 0
        self._flushed_at = 0
        self._inflight: dict[str, int] = {}
        self._invalidated_at: dict[str, int] = {}
        self._conn: Any = None
        self._thread: threading.Thread | None = None
        #: Replaced by a newer near cache for the same URL (settings changed): its thread ends.
        self.closed = False
        self._redo = False  # the connection was dropped on purpose: reconnect at once, quietly
        #: Counters for the admin and tests.
        self.invalidations = 0
        self.flushes = 0
        self.reconnects = 0
        # A Sentinel failover: the tracking connection may stay on the demoted primary, which never hears
        # of the writes made on the new one.
        client.on_failover.append(self._drop_connection)

    # -- what readers call ----------------------------------------------------
    @property
    def watching(self) -> bool:
        """Copies may be served: the invalidation connection is subscribed (started on first use)."""
        if not self._watching and self._thread is None and not self.client.cluster:
            self._start()
        return self._watching

    @property
    def silence(self) -> float:
        """Seconds since the invalidation connection last delivered anything (copies are served below
        :data:`MAX_SILENCE`)."""
        return time.monotonic() - self._heard

    def get(self, key: str) -> bytes | None:
        if not self._watching:
            self.watching  # noqa: B018 - starts the invalidation connection on first use
            return None
        # No lock: each dict operation is atomic under the GIL, and a copy dropped between the lookup and
        # the reordering was still current when it was looked up (as if the invalidation came later).
        data = self._data
        entry = data.get(key)
        if entry is None:
            return None
        raw, expires = entry
        now = time.monotonic()
        if now - self._heard > MAX_SILENCE:
            return None  # the invalidations may be stuck on the way: ask Redis until they are heard again
        if expires and now >= expires:
            data.pop(key, None)
            return None
        with contextlib.suppress(KeyError):
            data.move_to_end(key)
        return raw

    def begin(self, key: str) -> int | None:
        """Before a read goes to Redis: a token for :meth:`end`, or None (nothing may be kept now)."""
        if not self._watching:
            return None
        with self._lock:
            self._inflight[key] = self._inflight.get(key, 0) + 1
            return self._seq

    def end(self, key: str, token: int, raw: bytes | None, ttl_ms: int) -> None:
        """The read that :meth:`begin` gave ``token`` returned ``raw`` with ``ttl_ms`` left (Redis's PTTL):
        keep it unless the key was invalidated, or the connection lost, since the read began."""
        with self._lock:
            readers = self._inflight.get(key, 1) - 1
            if readers:
                self._inflight[key] = readers
                invalidated = self._invalidated_at.get(key, -1)
            else:
                self._inflight.pop(key, None)
                invalidated = self._invalidated_at.pop(key, -1)
            # PTTL: -1 no expiry, -2 gone, 0 under a millisecond left: not kept (the two-process test
            # caught a copy kept as "no expiry" there and served until the next write)
            if raw is None or ttl_ms in (-2, 0) or not self._watching or token < self._flushed_at \
                    or invalidated > token:
                return
            self._data[key] = (raw, time.monotonic() + ttl_ms / 1000 if ttl_ms > 0 else 0.0)
            self._data.move_to_end(key)
            while len(self._data) > conf.near_cache_size:
                self._data.popitem(last=False)

    def settle(self, key: str, token: int | None, reply: Any) -> Any:
        """:meth:`end` for a read whose reply is ``[value, pttl]`` (GET + PTTL, or ACQUIRE_TTL's hit) or
        anything else (nothing to keep: a lease reply, None after an error); returns the value, or the
        reply itself when it held none."""
        hit = type(reply) is list
        if token is not None:
            self.end(key, token, reply[0] if hit else None, int(reply[1]) if hit else -2)
        return reply[0] if hit else reply

    def drop(self, *keys: str) -> None:
        """This process changed ``keys``: forget them now (their invalidations follow)."""
        self._invalidate(keys)

    def drop_matching(self, pattern: str) -> None:
        """This process deleted the keys matching the Redis glob ``pattern``."""
        with self._lock:
            doomed = [k for k in (*self._data, *self._inflight) if fnmatch.fnmatchcase(k, pattern)]
        self._invalidate(doomed)

    def __len__(self) -> int:
        return len(self._data)

    # -- invalidations --------------------------------------------------------
    def _invalidate(self, keys: Iterable[str] | None) -> None:
        with self._lock:
            if keys is None:  # FLUSHDB/FLUSHALL
                self._flush()
                return
            self._seq += 1
            for key in keys:
                self._data.pop(key, None)
                if key in self._inflight:
                    self._invalidated_at[key] = self._seq
                self.invalidations += 1

    def _flush(self) -> None:
        """Drop every copy, and refuse those reads in flight would keep (under the lock)."""
        self._seq += 1
        self._flushed_at = self._seq
        self._data.clear()

    def _unwatch(self) -> None:
        with self._lock:
            self._watching = False
            self._flush()
            self.flushes += 1

    # -- the invalidation connection ----------------------------------------
    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="sgm-near-cache", daemon=True)
        self._thread.start()

    def _drop_connection(self) -> None:
        """Make the connection reconnect (new prefixes, a Sentinel failover): copies are dropped meanwhile.

        Called from other threads: the socket is shut down, not closed, so the reader wakes to an EOF
        (closing it under the reader made redis-py raise a TypeError there)."""
        self._unwatch()
        self._redo = True
        sock = getattr(self._conn, "_sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _current(self) -> bool:
        """Still the near cache of the app's client for this URL (a settings change makes new clients)."""
        return registered_clients.get(self.client.url) is self.client

    def _run(self) -> None:
        delay = RECONNECT_MIN
        failing = False
        while not self.closed and self._current():
            conn = None
            try:
                conn = self._subscribe()
                if failing:
                    logger.info("The near cache's invalidation connection is back; serving copies again.")
                failing, delay = False, RECONNECT_MIN
                self._serve(conn)
            except _LOST as exc:
                self._unwatch()
                if self._redo:
                    self._redo = False
                    continue
                if not failing:
                    failing = True
                    logger.warning("The near cache lost its invalidation connection (%s); reading from Redis "
                                   "until it is back.", exc)
                time.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX)
            except Exception:  # a bug here must not end the thread: the near cache would never serve again
                self._unwatch()
                logger.exception("The near cache's invalidation connection failed; reconnecting.")
                time.sleep(RECONNECT_MAX)
            finally:
                self._conn = None
                if conn is not None:
                    conn.disconnect()
        self._unwatch()
        with self._lock:
            self._thread = None

    def _subscribe(self) -> Any:
        pool = self.client.redis.connection_pool
        # RESP2: the invalidations arrive as Pub/Sub messages on this very connection (REDIRECT to itself).
        # (redis-py 8 speaks RESP3 by default, where they are push replies its parser hands elsewhere.)
        conn: Any = pool.connection_class(**{**pool.connection_kwargs, "protocol": 2})
        conn.connect()
        self._conn = conn
        conn.send_command("CLIENT", "ID")
        client_id = conn.read_response()
        prefixes = _disjoint({conf.key_prefix + p for p in _prefixes})
        args: list[Any] = ["CLIENT", "TRACKING", "on", "REDIRECT", client_id, "BCAST"]
        for prefix in prefixes:
            args += ["PREFIX", prefix]
        conn.send_command(*args)
        conn.read_response()
        conn.send_command("SUBSCRIBE", CHANNEL)
        conn.read_response()
        with self._lock:  # copies kept before this may have missed invalidations: start empty
            self._flush()
            self._heard = time.monotonic()
            self._watching = True
        self.reconnects += 1
        return conn

    def _serve(self, conn: Any) -> None:
        ping_sent = 0.0
        while not self.closed:
            if not conn.can_read(timeout=IDLE):
                if not self._current():
                    return
                now = time.monotonic()
                if ping_sent and now - ping_sent > max(conf.socket_timeout, IDLE):
                    raise redis.exceptions.TimeoutError("no reply to PING")
                if not ping_sent:
                    conn.send_command("PING")
                    ping_sent = now
                continue
            message = conn.read_response()
            self._heard = time.monotonic()
            kind = message[0]
            if kind == b"message" and message[1] == CHANNEL:
                keys = message[2]
                self._invalidate(None if keys is None else [k.decode(errors="surrogateescape") for k in keys])
            elif kind == b"pong":
                ping_sent = 0.0


def _disjoint(prefixes: set[str]) -> list[str]:
    """Redis refuses overlapping BCAST prefixes: keep the shortest of each family."""
    kept: list[str] = []
    for prefix in sorted(prefixes, key=len):
        if not any(prefix.startswith(shorter) for shorter in kept):
            kept.append(prefix)
    return kept


_caches: dict[str, NearCache] = {}
_caches_lock = threading.Lock()
#: Key prefixes (without KEY_PREFIX) of the local=True templates and managers.
_prefixes: set[str] = set()


def watch(prefix: str) -> None:
    """Track keys under ``prefix`` (without ``KEY_PREFIX``) in every process's near cache. A prefix added
    while a near cache runs makes it subscribe again (its copies are dropped meanwhile)."""
    if prefix in _prefixes:
        return
    _prefixes.add(prefix)
    for cache in list(_caches.values()):
        if cache._thread is not None:
            cache._drop_connection()


def _running(client: RedisClient) -> NearCache | None:
    cache = _caches.get(client.url)
    return cache if cache is not None and cache.client is client else None


def forget(client: RedisClient, *keys: str) -> None:
    """This process wrote or deleted ``keys``: its own near cache forgets them now, not when Redis's
    invalidation arrives (read-your-writes). Nothing to do where no near cache runs."""
    if (cache := _running(client)) is not None:
        cache.drop(*keys)


def forget_matching(client: RedisClient, pattern: str) -> None:
    if (cache := _running(client)) is not None:
        cache.drop_matching(pattern)


def near_cache(client: RedisClient) -> NearCache:
    cache = _caches.get(client.url)
    if cache is None or cache.client is not client:
        with _caches_lock:
            cache = _caches.get(client.url)
            if cache is None or cache.client is not client:
                if cache is not None:
                    cache.closed = True
                cache = _caches[client.url] = NearCache(client)
    return cache
