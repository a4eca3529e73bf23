"""``@redis_cache``: cache-aside with lease-guarded fills, fail-open on outages.

One decorator with a sync and an async branch (as django-htmx does). The hit
path is one ``GET`` and a JSON decode; everything else (leases, waiting,
breaker bookkeeping) happens only on a miss or an outage.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import time
from collections.abc import Callable, Generator, Iterable
from typing import Any

from . import scripts, stats
from .cache import DEFAULT, TTL, CacheManager, ttl_ms
from .conf import conf
from .connection import REDIS_ERRORS, get_redis_client
from .exceptions import CacheKeyError
from .invalidation import Registration, register
from .keys import KeyTemplate, full_key, lease_key
from .serialization import dumps, loads

WAIT_MIN = 0.002
WAIT_MAX = 0.05


def _token() -> str:
    return os.urandom(12).hex()


class CachedFunction:
    """The state shared by the sync and async wrappers of one decorated function."""

    def __init__(self, func: Callable[..., Any], key: str, ttl: TTL, cache_none: bool) -> None:
        from .binding import ArgBinder

        self.func = func
        self.template = KeyTemplate(key)
        self.binder = ArgBinder(func)
        self.ttl = ttl
        self.cache_none = cache_none
        self.name = self.template.template
        unknown = [r for r in self.template.roots if r not in self.binder.signature.parameters]
        if unknown and not self.binder.var_keyword:
            raise TypeError(
                f"@redis_cache(key={key!r}) on {self.binder.func_name}: placeholder "
                f"{unknown[0]!r} is not a parameter of the function."
            )

    def key_for(self, *args: Any, **kwargs: Any) -> str:
        """The Redis key a call with these arguments uses."""
        return full_key(self.template.fill(self.binder.bind(args, kwargs)))

    def relative_key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """The key without ``KEY_PREFIX``, as ``CacheManager()`` takes it.

        For a method whose template does not use ``self``, the instance may
        be left out: ``Processor.lookup.invalidate(mac_address="AA")``.
        """
        positional = self.binder.positional
        if positional and positional[0] in ("self", "cls") and positional[0] not in self.template.roots:
            try:
                return self.template.fill(self.binder.bind((None, *args), kwargs))
            except CacheKeyError:
                pass
        return self.template.fill(self.binder.bind(args, kwargs))

    def public_key_for(self, *args: Any, **kwargs: Any) -> str:
        return full_key(self.relative_key(args, kwargs))

    def invalidate(self, *args: Any, **kwargs: Any) -> int:
        return CacheManager().invalidate(self.relative_key(args, kwargs))

    async def ainvalidate(self, *args: Any, **kwargs: Any) -> int:
        return await CacheManager().ainvalidate(self.relative_key(args, kwargs))

    def _encode(self, result: Any) -> bytes:
        try:
            return dumps(result)
        except TypeError as exc:
            raise TypeError(
                f"@redis_cache({self.name!r}): {self.binder.func_name}() returned a value that "
                f"cannot be cached as JSON ({exc})."
            ) from exc

    # -- sync ---------------------------------------------------------------
    def call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        key = self.key_for(*args, **kwargs)
        client = get_redis_client()
        breaker = client.breaker
        if breaker.allow():
            try:
                raw = client.redis.get(key)
            except REDIS_ERRORS as exc:
                breaker.record_failure(exc)
            else:
                if breaker.failing:
                    breaker.record_success()
                if raw is not None:
                    stats.incr(self.name, "hits")
                    return loads(raw)
                stats.incr(self.name, "misses")
                try:
                    return self._fill(client.redis, key, args, kwargs)
                except REDIS_ERRORS as exc:
                    breaker.record_failure(exc)
        stats.incr(self.name, "bypassed")
        return loads(self._encode(self.func(*args, **kwargs)))

    def _fill(self, conn: Any, key: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        steps = self._fill_steps(key)
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
                    reply = self.func(*args, **kwargs)
                except BaseException as exc:
                    error = exc
            elif step[0] == "sleep":
                time.sleep(step[1])
            else:
                reply = scripts.run(conn, *step[1:])

    # -- async --------------------------------------------------------------
    async def acall(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        key = self.key_for(*args, **kwargs)
        client = get_redis_client()
        breaker = client.breaker
        if breaker.allow():
            try:
                conn = client.aredis
                raw = await conn.get(key)
            except REDIS_ERRORS as exc:
                breaker.record_failure(exc)
            else:
                if breaker.failing:
                    breaker.record_success()
                if raw is not None:
                    stats.incr(self.name, "hits")
                    return loads(raw)
                stats.incr(self.name, "misses")
                try:
                    return await self._afill(conn, key, args, kwargs)
                except REDIS_ERRORS as exc:
                    breaker.record_failure(exc)
        stats.incr(self.name, "bypassed")
        return loads(self._encode(await self.func(*args, **kwargs)))

    async def _afill(self, conn: Any, key: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        steps = self._fill_steps(key)
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
                    reply = await self.func(*args, **kwargs)
                except BaseException as exc:  # CancelledError too: the lease must be given back
                    error = exc
            elif step[0] == "sleep":
                await asyncio.sleep(step[1])
            else:
                # Shielded: a cancelled caller still releases its lease.
                reply = await asyncio.shield(scripts.arun(conn, *step[1:]))

    # -- the lease protocol, written once for both drivers ------------------
    def _fill_steps(self, key: str) -> Generator[tuple[Any, ...], Any, Any]:
        """The fill of a missed ``key``, as steps: ("script", src, keys, args), ("sleep", s), ("call",).

        The sync and async drivers above execute the steps; the lease logic
        lives only here. The function's exception is thrown back in at "call".
        """
        lease, token = lease_key(key), _token()
        lease_ms = int(conf.lease_ttl * 1000)
        deadline = time.monotonic() + conf.lease_ttl
        delay = WAIT_MIN
        while True:
            reply = yield ("script", scripts.ACQUIRE, [key, lease], [token, lease_ms])
            if reply[0] == 1:
                return loads(reply[1])  # another filler finished meanwhile
            if reply[0] == 2:
                break  # the lease is ours
            stats.incr(self.name, "lease_waits")
            if time.monotonic() > deadline:
                # The lease holder is stuck; serve a fresh value without caching it.
                return loads(self._encode((yield ("call",))))
            yield ("sleep", delay)
            delay = min(delay * 2, WAIT_MAX)
        try:
            result = yield ("call",)
            encoded = self._encode(result)
        except BaseException:
            yield ("script", scripts.RELEASE, [lease], [token])
            raise
        if result is None and not self.cache_none:
            yield ("script", scripts.RELEASE, [lease], [token])
        elif (yield ("script", scripts.FILL, [key, lease], [token, encoded, ttl_ms(self.ttl)])):
            stats.incr(self.name, "fills")
        return loads(encoded)

def redis_cache(
    key: str,
    ttl: TTL = DEFAULT,
    invalidate_on: Iterable[str] = (),
    cache_none: bool = False,
) -> Callable[[Callable[..., Any]], Any]:
    """Cache a function's JSON-able result in Redis under ``key`` (a template).

    ``ttl`` omitted uses ``DEFAULT_TTL``; ``ttl=None`` never expires.
    ``invalidate_on`` channels delete the key when their events arrive.
    """
    if isinstance(invalidate_on, str):
        invalidate_on = [invalidate_on]
    channels = tuple(invalidate_on)

    def decorator(func: Callable[..., Any]) -> Any:
        cached = CachedFunction(func, key, ttl, cache_none)
        register(Registration(cached.template, channels, cached.binder.func_name, ttl=ttl))
        wrapper: Any
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                return await cached.acall(args, kwargs)

        else:

            @functools.wraps(func)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                return cached.call(args, kwargs)

        wrapper.key_for = cached.public_key_for
        wrapper.invalidate = cached.invalidate
        wrapper.ainvalidate = cached.ainvalidate
        wrapper.cache = cached
        return wrapper

    return decorator
