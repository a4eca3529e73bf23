"""Single commands straight to a connection: the cache's hot path without redis-py's per-command machinery.

redis-py 8 spends about 20 of the 35 us of a loopback ``GET`` around the
socket: a pool checkout that polls the socket, a retry closure, metrics
records and the release. A cache read is one command whose reply is the
value, so it goes on a connection of the client's own (one per thread, and an
idle list per event loop), packed here and read by redis-py's own parser
(hiredis when installed).

Everything else matches redis-py: the same connection class and options
(timeouts, TLS, AUTH, a Sentinel's primary, a PING before the first command
after 15 s idle, as ``health_check_interval`` asks), one retry on a fresh connection
after a ``ConnectionError`` on a reused one (what makes the first command
after a Redis restart work), and a connection closed on any other failure or
a cancellation, since its reply may be half-read. A reply that is an error
(``NOSCRIPT``) leaves the connection in step and raises. A Sentinel switch
(``RedisClient.generation``) or a fork replaces the connections. A Cluster
routes keys per slot, so it has none of this: its commands go through redis-py.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import redis
from hiredis import pack_command

from supergraph_messaging.redis.scripts import sha

#: Idle connections an event loop keeps (a burst beyond them closes its extra connections).
ASYNC_IDLE = 32
_forks = 0


def _forked() -> None:
    global _forks
    _forks += 1


os.register_at_fork(after_in_child=_forked)


def pack(parts: tuple[bytes | str | int, ...]) -> bytes:
    """A command in RESP: ``*<n>``, then ``$<length>`` and each argument (hiredis, which ``redis[hiredis]``
    installs with this package)."""
    return pack_command(parts)  # type: ignore[arg-type,no-any-return]


def script_command(src: str, keys: Sequence[str], args: Sequence[bytes | str | int]) -> bytes:
    """``EVALSHA``; a read's two keys and two arguments (key, lease, token, lease ms) packed as one string."""
    if len(keys) == 2 and len(args) == 2 and type(args[0]) is str and type(args[1]) is int:
        key, lease = keys
        token, ms = args[0], str(args[1])
        text = (f"*7\r\n$7\r\nEVALSHA\r\n$40\r\n{sha(src)}\r\n$1\r\n2\r\n${len(key)}\r\n{key}\r\n"
                f"${len(lease)}\r\n{lease}\r\n${len(token)}\r\n{token}\r\n${len(ms)}\r\n{ms}\r\n")
        if text.isascii():
            return text.encode()
    return pack((b"EVALSHA", sha(src), len(keys), *keys, *args))


class _Thread(threading.local):
    conn: Any = None
    generation = -1
    forks = -1


class DirectCommands:
    """One command per call on connections of their own, for one non-Cluster client.

    ``generation`` reads the owner's failover generation; ``sync_pool`` and
    ``async_pool`` give the pools whose connection class and options to copy.
    """

    def __init__(self, generation: Callable[[], int], sync_pool: Callable[[], Any],
                 async_pool: Callable[[], Any]) -> None:
        self._generation = generation
        self._sync_pool = sync_pool
        self._async_pool = async_pool
        self._thread = _Thread()
        self._idle: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[int, list[Any]]] = (
            weakref.WeakKeyDictionary()
        )

    # -- sync ---------------------------------------------------------------
    def _connection(self) -> Any:
        pool = self._sync_pool()
        conn = pool.connection_class(**pool.connection_kwargs)
        # Explicitly: a command on an unconnected one would connect to its host, not a Sentinel's primary.
        conn.connect()
        local = self._thread
        local.conn, local.generation, local.forks = conn, self._generation(), _forks
        return conn

    def execute(self, packed: bytes) -> Any:
        """Send one packed command (see :func:`pack`) and return its reply, parsed as redis-py parses it."""
        local = self._thread
        conn = local.conn
        fresh = conn is None or local.generation != self._generation() or local.forks != _forks
        if fresh:
            if conn is not None and local.forks == _forks:
                conn.disconnect()
            conn = self._connection()
        for attempt in (1, 2):
            try:
                conn.send_packed_command([packed])
                return conn.read_response()
            except redis.exceptions.ResponseError:
                raise  # an error reply, read whole: the connection is still in step
            except redis.exceptions.ConnectionError:
                self._drop(conn)
                if fresh or attempt == 2:
                    raise
            except BaseException:
                self._drop(conn)
                raise
            conn = self._connection()  # Redis closed the reused connection (a restart): once more, on a new one
        raise AssertionError("unreachable")

    def _drop(self, conn: Any) -> None:
        conn.disconnect()
        if self._thread.conn is conn:
            self._thread.conn = None

    def script(self, src: str, keys: Sequence[str], args: Sequence[bytes | str | int]) -> Any:
        """EVALSHA ``src``; on ``NOSCRIPT`` (a restarted Redis) load it and run it again."""
        command = script_command(src, keys, args)
        try:
            return self.execute(command)
        except redis.exceptions.NoScriptError:
            self.execute(pack((b"SCRIPT", b"LOAD", src)))
            return self.execute(command)

    # -- async --------------------------------------------------------------
    def _loop_idle(self) -> tuple[list[Any], list[Any]]:
        """The running loop's idle connections, and those made before a Sentinel switch (to close)."""
        loop = asyncio.get_running_loop()
        generation = self._generation()
        found = self._idle.get(loop)
        if found is not None and found[0] == generation:
            return found[1], []
        idle: list[Any] = []
        self._idle[loop] = (generation, idle)
        return idle, found[1] if found is not None else []

    async def _aconnection(self) -> Any:
        pool = self._async_pool()
        conn = pool.connection_class(**pool.connection_kwargs)
        await conn.connect()  # as in _connection()
        return conn

    async def aexecute(self, packed: bytes) -> Any:
        """:meth:`execute` on the running loop's connections."""
        idle, stale = self._loop_idle()
        for old in stale:
            await old.disconnect(nowait=True)
        fresh = not idle
        conn = await self._aconnection() if fresh else idle.pop()
        for attempt in (1, 2):
            try:
                await conn.send_packed_command([packed])
                reply = await conn.read_response()
            except redis.exceptions.ResponseError:
                idle.append(conn)  # an error reply, read whole: in step
                raise
            except redis.exceptions.ConnectionError:
                await conn.disconnect(nowait=True)
                if fresh or attempt == 2:
                    raise
                conn = await self._aconnection()  # a restarted Redis: once more, on a new connection
                continue
            except BaseException:
                await asyncio.shield(conn.disconnect(nowait=True))  # a cancelled read may be half-read
                raise
            break
        if len(idle) < ASYNC_IDLE:
            idle.append(conn)
        else:
            await conn.disconnect(nowait=True)
        return reply

    async def ascript(self, src: str, keys: Sequence[str], args: Sequence[bytes | str | int]) -> Any:
        command = script_command(src, keys, args)
        try:
            return await self.aexecute(command)
        except redis.exceptions.NoScriptError:
            await self.aexecute(pack((b"SCRIPT", b"LOAD", src)))
            return await self.aexecute(command)

