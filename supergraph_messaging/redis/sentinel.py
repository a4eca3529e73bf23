"""A Sentinel-monitored primary: clients that follow a failover the moment it happens.

The clients ask the sentinels for the current primary on every (re)connect,
so a failover is followed instead of writing to a demoted primary until it
refuses. redis-py's Sentinel pools ask only when they connect, and a
connection to a demoted primary keeps working until the sentinels
reconfigure it: writes acknowledged there in between are lost when it
resyncs from the new primary (about 10 s of them, measured without the
watcher). So one daemon thread per monitored service listens for
``+switch-master`` on any live sentinel and tells the registered clients,
which disconnect their pools and pin the announced primary; the next command
connects to it.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, cast

import redis
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.asyncio.sentinel import SentinelManagedConnection as AsyncSentinelManagedConnection
from redis.sentinel import Sentinel, SentinelManagedConnection

from supergraph_messaging.redis.urls import SentinelTarget, _sentinel_kwargs, is_sentinel, parse_sentinel

PIN_SECONDS = 10.0


class FollowingSentinel(Sentinel):
    """A Sentinel client that can be told the new primary (from ``+switch-master``).

    After a manual failover the old primary stays up, and a sentinel that has not caught up, or that
    has not connected to the new primary yet, still names the old one: asking would send the reconnect
    straight back (measured: 1,725 writes lost in one run). Pinned, the announced address wins for
    ``PIN_SECONDS``.
    """

    _pinned: tuple[str, int] | None = None
    _pinned_until = 0.0

    def pin(self, address: tuple[str, int], until: float) -> None:
        self._pinned, self._pinned_until = address, until

    def discover_master(self, service_name: str) -> Any:
        if self._pinned is not None and time.monotonic() < self._pinned_until:
            return self._pinned
        return cast(Any, super()).discover_master(service_name)  # untyped before redis-py 8.2


class AsyncFollowingSentinel(AsyncSentinel):
    """:class:`FollowingSentinel` for asyncio clients."""

    _pinned: tuple[str, int] | None = None
    _pinned_until = 0.0

    def pin(self, address: tuple[str, int], until: float) -> None:
        self._pinned, self._pinned_until = address, until

    async def discover_master(self, service_name: str) -> Any:
        if self._pinned is not None and time.monotonic() < self._pinned_until:
            return self._pinned
        return await super().discover_master(service_name)


def _pinned(pool: Any) -> tuple[str, int] | None:
    manager = getattr(pool, "sentinel_manager", None)
    if not isinstance(manager, FollowingSentinel | AsyncFollowingSentinel) or time.monotonic() >= manager._pinned_until:
        return None
    return manager._pinned


class FollowingConnection(SentinelManagedConnection):
    """Checks, once connected, that it reached the pinned primary: a connection that asked a lagging
    sentinel just before the pin would otherwise finish connecting to the demoted primary and stay."""

    def _connect_retry(self) -> None:
        super()._connect_retry()  # type: ignore[no-untyped-call]
        pinned = _pinned(self.connection_pool)
        if pinned is not None and (self.host, self.port) != pinned:
            self.disconnect()  # type: ignore[no-untyped-call]
            self.connect_to(pinned)  # type: ignore[no-untyped-call]


class AsyncFollowingConnection(AsyncSentinelManagedConnection):
    """:class:`FollowingConnection` for asyncio clients."""

    async def _connect_retry(self) -> None:
        await super()._connect_retry()  # type: ignore[no-untyped-call]
        pinned = _pinned(self.connection_pool)
        if pinned is not None and (self.host, self.port) != pinned:
            await self.disconnect()
            await self.connect_to(pinned)  # type: ignore[no-untyped-call]


def pin_primary(client: Any, address: tuple[str, int], until: float) -> None:
    """Make ``client`` (a Sentinel-managed one) connect to ``address`` until ``until`` (time.monotonic())."""
    manager = getattr(client.connection_pool, "sentinel_manager", None)
    if isinstance(manager, FollowingSentinel | AsyncFollowingSentinel):
        manager.pin(address, until)


def _client(url: str, kwargs: dict[str, Any], from_url: Any, sentinel_class: Any, connection_class: Any) -> Any:
    if not is_sentinel(url):
        return from_url(url, **kwargs)
    target = parse_sentinel(url)
    sentinel_kwargs, primary_kwargs = _sentinel_kwargs(target, kwargs)
    if not target.ssl:  # (TLS keeps redis-py's own class: no after-connect check, the repeated drops only)
        primary_kwargs["connection_class"] = connection_class
    sentinel = sentinel_class(list(target.sentinels), sentinel_kwargs=sentinel_kwargs, **sentinel_kwargs)
    return sentinel.master_for(target.service, **primary_kwargs)


logger = logging.getLogger("supergraph_messaging.failover")

SWITCH_CHANNEL = "+switch-master"
RETRY_DELAY = 0.2


class SwitchWatcher:
    def __init__(self, target: SentinelTarget, timeout: float) -> None:
        self.target = target
        self.timeout = timeout
        #: When the clients were last told of a switch (time.monotonic()): what they send after it goes
        #: to the new primary.
        self.handled_at: float | None = None
        self._callbacks: list[weakref.WeakMethod[Callable[[tuple[str, int]], None]]] = []  # (new primary)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"sgm-sentinel-{target.service}")
        self._thread.start()

    def add(self, callback: Callable[[tuple[str, int]], None]) -> None:
        """``callback((host, port))`` of the new primary on each switch; held weakly (a bound method of a
        client)."""
        with self._lock:
            self._callbacks = [c for c in self._callbacks if c() is not None]
            self._callbacks.append(weakref.WeakMethod(callback))

    def _orphaned(self) -> bool:
        """Every client that asked is gone (settings changed, tests swapped servers): stop watching.

        Decided under the registry's lock, in which :func:`watch` also adds, so a client never registers
        with a watcher that is leaving."""
        with _watchers_lock, self._lock:
            if not self._callbacks or any(c() is not None for c in self._callbacks):
                return False
            if _watchers.get(self.target) is self:
                del _watchers[self.target]
            return True

    def _run(self) -> None:
        attempt = 0
        while not self._orphaned():
            host, port = self.target.sentinels[attempt % len(self.target.sentinels)]
            attempt += 1
            try:
                self._listen(host, port)
            except redis.RedisError as exc:
                logger.debug("Sentinel %s:%s: %s; trying the next one.", host, port, exc)
            time.sleep(RETRY_DELAY)

    def _listen(self, host: str, port: int) -> None:
        conn = redis.Redis(host=host, port=port, socket_connect_timeout=self.timeout, socket_timeout=None,
                           health_check_interval=5, ssl=self.target.ssl)
        pubsub = cast(Any, conn).pubsub(ignore_subscribe_messages=True)  # untyped before redis-py 8.2
        try:
            pubsub.subscribe(SWITCH_CHANNEL)
            while not self._orphaned():
                message = pubsub.get_message(timeout=1.0)
                if message is not None:
                    self._on_message(message["data"])
        finally:
            pubsub.close()
            conn.close()

    def _on_message(self, data: Any) -> None:
        text = data.decode() if isinstance(data, bytes) else str(data)
        fields = text.split()  # "<service> <old ip> <old port> <new ip> <new port>"
        if len(fields) != 5 or fields[0] != self.target.service:
            return
        if not fields[4].isdigit():
            return
        address = (fields[3], int(fields[4]))
        logger.warning("Sentinel: the primary of %r moved from %s:%s to %s:%s; dropping connections to it.",
                       fields[0], fields[1], fields[2], *address)
        with self._lock:
            callbacks = [c() for c in self._callbacks]
        for callback in callbacks:
            if callback is not None:
                callback(address)
        self.handled_at = time.monotonic()


_watchers: dict[SentinelTarget, SwitchWatcher] = {}
_watchers_lock = threading.Lock()


def watch(url: str, callback: Callable[[tuple[str, int]], None], timeout: float) -> SwitchWatcher:
    """Call ``callback`` (weakly held) whenever the primary of ``url``'s service changes."""
    target = parse_sentinel(url)
    with _watchers_lock:
        watcher = _watchers.get(target)
        if watcher is None:
            watcher = _watchers[target] = SwitchWatcher(target, timeout)
        watcher.add(callback)
    return watcher
