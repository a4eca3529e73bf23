"""The lease protocol of a ``@redis_cache`` miss, written once as steps, and its sync and async drivers.

A miss takes the key's lease (or waits for the process holding it), runs
the function once, and fills the key; the steps say what to do
(``("script", src, keys, args)``, ``("sleep", s)``, ``("call",)``) and a
driver does it, with the sync or the async client. The function runs at
most once per call, whatever Redis does.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from supergraph_messaging.cache import stats
from supergraph_messaging.cache.manager import ttl_ms
from supergraph_messaging.conf import conf
from supergraph_messaging.redis import scripts
from supergraph_messaging.redis.errors import REDIS_ERRORS
from supergraph_messaging.redis.serialization import UNDECODABLE, loads

if TYPE_CHECKING:
    from supergraph_messaging.cache.decorator import CachedFunction

WAIT_MIN = 0.002
WAIT_MAX = 0.05


def new_token() -> str:
    return os.urandom(12).hex()


def lease_ms() -> int:
    return int(conf.lease_ttl * 1000)


class _Unavailable:
    """The reply of a script step that could not reach Redis (the breaker has been told)."""

    def __repr__(self) -> str:
        return "UNAVAILABLE"


UNAVAILABLE = _Unavailable()

Step = tuple[Any, ...]


def fill_steps(fn: CachedFunction, key: str, lease: str, token: str, reply: Any) -> Generator[Step, Any, Any]:
    """The rest of a read that missed: ``reply`` is what its ACQUIRE replied (the lease taken, someone
    else filling, or a value that is not JSON), or None after a GET that found nothing. As steps:
    ("script", src, keys, args), ("sleep", s), ("call",).

    The sync and async drivers below execute the steps; the lease logic
    lives only here. The function's exception is thrown back in at
    "call"; a script that could not reach Redis replies ``UNAVAILABLE``.
    The function runs at most once per call, whatever Redis does.
    """
    deadline = time.monotonic() + fn._holder_wait()
    delay = WAIT_MIN
    while True:
        if reply is None:
            reply = yield ("script", scripts.ACQUIRE, [key, lease], [token, lease_ms()])
            if reply is UNAVAILABLE:
                stats.incr(fn.name, "bypassed")
                return loads(fn._encode((yield ("call",))))
        if type(reply) is bytes:
            value = fn._decode(reply, key)
            if value is not UNDECODABLE:
                return value  # another filler finished meanwhile
            yield ("script", scripts.DISCARD, [key], [reply])
            if time.monotonic() > deadline:
                return loads(fn._encode((yield ("call",))))
        elif reply == 2:
            break  # the lease is ours
        else:
            stats.incr(fn.name, "lease_waits")
            if time.monotonic() > deadline:
                # The lease holder is stuck; serve a fresh value without caching it.
                return loads(fn._encode((yield ("call",))))
            yield ("sleep", delay)
            delay = min(delay * 2, WAIT_MAX)
        reply = None
    started = time.monotonic()
    try:
        result = yield ("call",)
        fn._timed(time.monotonic() - started)
        encoded = fn._encode(result)
    except BaseException:
        yield ("script", scripts.RELEASE, [lease], [token])
        raise
    if result is None and not fn.cache_none:
        yield ("script", scripts.RELEASE, [lease], [token])
    elif (yield ("script", scripts.FILL, [key, lease], [token, encoded, ttl_ms(fn.ttl)])) is UNAVAILABLE:
        pass  # the value could not be stored; the caller still gets it, computed once
    else:
        stats.incr(fn.name, "fills")
    return loads(encoded)


def drive(steps: Generator[Step, Any, Any], func: Callable[..., Any], client: Any, args: tuple[Any, ...],
          kwargs: dict[str, Any]) -> Any:
    """Run the steps of a fill with the sync client."""
    reply: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = steps.throw(error) if error is not None else steps.send(reply)
        except StopIteration as done:
            return done.value
        error = None
        if step[0] == "call":
            try:
                reply = func(*args, **kwargs)
            except BaseException as exc:
                error = exc
        elif step[0] == "sleep":
            time.sleep(step[1])
        else:
            try:
                reply = client.script(*step[1:])
            except REDIS_ERRORS as exc:
                client.breaker.record_failure(exc)
                reply = UNAVAILABLE


async def adrive(steps: Generator[Step, Any, Any], func: Callable[..., Any], client: Any, args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> Any:
    """Run the steps of a fill with the async client."""
    reply: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = steps.throw(error) if error is not None else steps.send(reply)
        except StopIteration as done:
            return done.value
        error = None
        if step[0] == "call":
            try:
                reply = await func(*args, **kwargs)
            except BaseException as exc:  # CancelledError too: the lease must be given back
                error = exc
        elif step[0] == "sleep":
            await asyncio.sleep(step[1])
        else:
            try:
                # Shielded: a cancelled caller still releases its lease.
                reply = await asyncio.shield(client.ascript(*step[1:]))
            except REDIS_ERRORS as exc:
                client.breaker.record_failure(exc)
                reply = UNAVAILABLE
