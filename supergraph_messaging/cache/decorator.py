"""``@redis_cache``: cache-aside with lease-guarded fills, fail-open on outages.

One decorator with a sync and an async branch (as django-htmx does). The hit
path is one ``GET`` and a JSON decode; everything else (leases, waiting,
breaker bookkeeping) happens only on a miss or an outage.

The error boundary is exact: only Redis calls sit inside it. The decorated
function always runs outside, so its own ``ConnectionRefusedError`` or
``TimeoutError`` propagates to the caller once, is never blamed on Redis,
and never makes the function run a second time.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterable
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from asgiref.sync import markcoroutinefunction

from supergraph_messaging.cache import near, stats
from supergraph_messaging.cache._fill import adrive, drive, fill_steps, lease_ms, new_token
from supergraph_messaging.cache.invalidation import Registration, register
from supergraph_messaging.cache.manager import DEFAULT, TTL, CacheManager
from supergraph_messaging.cache.templates import KeyTemplate
from supergraph_messaging.conf import conf
from supergraph_messaging.exceptions import CacheKeyError
from supergraph_messaging.redis import scripts
from supergraph_messaging.redis.client import get_redis_client
from supergraph_messaging.redis.errors import REDIS_ERRORS
from supergraph_messaging.redis.keys import LEASE_SUFFIX, full_key, lease_key
from supergraph_messaging.redis.serialization import UNDECODABLE, decode_or_undecodable, dumps, loads

P = ParamSpec("P")
P2 = ParamSpec("P2")
R = TypeVar("R")
S = TypeVar("S")

logger = logging.getLogger("supergraph_messaging.cache")

#: Waiting for another process's fill: this many times the function's recent duration, at least
#: MIN_HOLDER_WAIT, and COLD_HOLDER_WAIT while this process has not timed the function yet (never
#: more than LEASE_TTL). A holder killed mid-fill then costs the waiters a short wait, not the TTL.
HOLDER_WAIT_FACTOR = 4
KEY_MEMO_SIZE = 4096
MIN_HOLDER_WAIT = 0.05
COLD_HOLDER_WAIT = 1.0


class CachedFunction:
    """The state shared by the sync and async wrappers of one decorated function."""

    def __init__(self, func: Callable[..., Any], key: str, ttl: TTL, cache_none: bool, local: bool = False) -> None:
        from supergraph_messaging.cache._argbind import ArgBinder

        self.func = func
        self.template = KeyTemplate(key)
        self.binder = ArgBinder(func)
        self.ttl = ttl
        self.cache_none = cache_none
        self.local = local
        self._near: near.NearCache | None = None  # the near cache of the client last used
        plain = not any("." in field or "[" in field for field in self.template.fields)
        self._memo: dict[Any, str] | None = {} if plain else None
        self.name = self.template.template
        if local:
            near.watch(self.template.template.split("{", 1)[0])
        self.reported_undecodable = False
        self.recent_duration: float | None = None  # moving average of the function's run time, seconds
        self.is_async = inspect.iscoroutinefunction(func)
        #: call(args, kwargs) or acall(args, kwargs): what a call of the decorated function runs.
        self.run: Callable[[tuple[Any, ...], dict[str, Any]], Any] = self.acall if self.is_async else self.call
        unknown = [r for r in self.template.roots if r not in self.binder.signature.parameters]
        if unknown and not self.binder.var_keyword:
            raise TypeError(
                f"@redis_cache(key={key!r}) on {self.binder.func_name}: placeholder "
                f"{unknown[0]!r} is not a parameter of the function."
            )

    def key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """The Redis key a call with these arguments uses.

        A call with ``str``/``int`` arguments maps to the same key every time (a template without
        attribute or item access): remembered, since binding and formatting would cost a hit a tenth of
        its instructions. (Only those types: ``1``, ``1.0`` and ``True`` are one dict key.) One argument,
        the common case, is remembered under itself, without a tuple or a type check per element.
        """
        memo = self._memo
        if memo is not None and not kwargs:
            if len(args) == 1:
                only = args[0]
                kind = type(only)
                if kind is str or kind is int:
                    relative = memo.get(only)
                    if relative is None:
                        relative = self._remember(only, args)
                    return conf.key_prefix + relative
            elif all(type(a) is str or type(a) is int for a in args):
                relative = memo.get(args)
                if relative is None:
                    relative = self._remember(args, args)
                return conf.key_prefix + relative
        return full_key(self.template.fill(self.binder.bind(args, kwargs)))

    def _remember(self, memo_key: Any, args: tuple[Any, ...]) -> str:
        relative = self.template.fill(self.binder.bind(args, {}))
        if self._memo is not None and len(self._memo) < KEY_MEMO_SIZE:
            self._memo[memo_key] = relative
        return relative

    def relative_key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """The key without ``KEY_PREFIX``, as ``CacheManager()`` takes it.

        Arguments bind as in a call. Only when that fails, and the template
        does not use the instance, may a method's instance be left out:
        ``Processor.lookup.invalidate(mac_address="AA")``.
        """
        try:
            return self.template.fill(self.binder.bind(args, kwargs))
        except CacheKeyError:
            positional = self.binder.positional
            if not (positional and positional[0] in ("self", "cls") and positional[0] not in self.template.roots):
                raise
        return self.template.fill(self.binder.bind((None, *args), kwargs))

    def public_key_for(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        return full_key(self.relative_key(args, kwargs))

    def invalidate(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
        return CacheManager().invalidate(self.relative_key(args, kwargs))

    async def ainvalidate(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
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
        key = self.key(args, kwargs)
        client = get_redis_client()
        breaker = client.breaker
        if breaker.allow():
            cache, value = self._local(client, key)
            if value is not UNDECODABLE:
                return value
            lease, token = lease_key(key, True) if client.cluster else key + LEASE_SUFFIX, new_token()
            try:
                if cache is None:
                    reply = client.script(scripts.ACQUIRE, [key, lease], [token, lease_ms()])
                else:
                    mark = cache.begin(key)
                    reply = None
                    try:
                        reply = client.script(scripts.ACQUIRE_TTL, [key, lease], [token, lease_ms()])
                    finally:
                        reply = cache.settle(key, mark, reply)
            except REDIS_ERRORS as exc:
                breaker.record_failure(exc)
            else:
                if breaker.failing:
                    breaker.record_success()
                if type(reply) is bytes:
                    value = self._decode(reply, key)
                    if value is not UNDECODABLE:
                        stats.incr(self.name, "hits")
                        return value
                stats.incr(self.name, "misses")
                return drive(fill_steps(self, key, lease, token, reply), self.func, client, args, kwargs)
        stats.incr(self.name, "bypassed")
        return loads(self._encode(self.func(*args, **kwargs)))

    # -- async --------------------------------------------------------------
    async def acall(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        key = self.key(args, kwargs)
        client = get_redis_client()
        breaker = client.breaker
        if breaker.allow():
            cache, value = self._local(client, key)
            if value is not UNDECODABLE:
                return value
            # A GET, not ACQUIRE as in call(): on the asyncio path the script's cost shows (side by side,
            # benchmarks/bench_cache.py: a GET hit 0.80x raw redis-py, an ACQUIRE hit 0.97x), and hits come
            # first; a miss then takes one round trip more. (With a near cache Redis is asked only on a local
            # miss: then ACQUIRE_TTL, which takes the lease.)
            lease, token = lease_key(key, True) if client.cluster else key + LEASE_SUFFIX, new_token()
            reply: Any = None
            try:
                if cache is None:
                    reply = await client.aget(key)
                else:
                    mark = cache.begin(key)
                    try:
                        reply = await client.ascript(scripts.ACQUIRE_TTL, [key, lease], [token, lease_ms()])
                    finally:
                        reply = cache.settle(key, mark, reply)
            except REDIS_ERRORS as exc:
                breaker.record_failure(exc)
            else:
                if breaker.failing:
                    breaker.record_success()
                if type(reply) is bytes:
                    value = self._decode(reply, key)
                    if value is not UNDECODABLE:
                        stats.incr(self.name, "hits")
                        return value
                stats.incr(self.name, "misses")
                return await adrive(fill_steps(self, key, lease, token, reply), self.func, client, args, kwargs)
        stats.incr(self.name, "bypassed")
        return loads(self._encode(await self.func(*args, **kwargs)))

    def _local(self, client: Any, key: str) -> tuple[near.NearCache | None, Any]:
        """The near cache (``local=True``, else None) and the value it holds for ``key`` (else UNDECODABLE)."""
        if not self.local:
            return None, UNDECODABLE
        cache = self._near
        if cache is None or cache.client is not client or cache.closed:
            cache = self._near = near.near_cache(client)
        raw = cache.get(key)
        value = UNDECODABLE if raw is None else self._decode(raw, key)
        if value is not UNDECODABLE:
            stats.incr(self.name, "hits")
        return cache, value

    # -- what the lease protocol asks of the function -------------------------
    def _holder_wait(self) -> float:
        recent = self.recent_duration
        wait = COLD_HOLDER_WAIT if recent is None else max(MIN_HOLDER_WAIT, HOLDER_WAIT_FACTOR * recent)
        return min(conf.lease_ttl, wait)

    def _timed(self, seconds: float) -> None:
        recent = self.recent_duration
        self.recent_duration = seconds if recent is None else 0.8 * recent + 0.2 * seconds

    def _decode(self, raw: bytes | str, key: str) -> Any:
        """The cached value, or UNDECODABLE (logged once per function): then it is a miss, overwritten."""
        value = decode_or_undecodable(raw)
        if value is UNDECODABLE and not self.reported_undecodable:
            self.reported_undecodable = True
            logger.warning("@redis_cache(%r): %r holds a value that is not JSON (%d bytes, starting %r); "
                           "treated as a miss and overwritten. Is another writer using this key?",
                           self.name, key, len(raw), raw[:20])
        return value


class CachedCallable(Generic[P, R]):
    """What ``@redis_cache`` returns: the function, plus ``key_for``/``invalidate``/``ainvalidate``.

    A descriptor, like a function: ``p.lookup`` binds ``p``, so that
    ``p.lookup.key_for("M1")`` and ``Processor.lookup.key_for(p, "M1")``
    give the same key.
    """

    def __init__(self, cached: CachedFunction) -> None:
        self.cache = cached
        functools.update_wrapper(self, cached.func)
        self._call = cached.run

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        result: R = self._call(args, kwargs)
        return result

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> CachedCallable[P, R]: ...

    @overload
    def __get__(self: CachedCallable[Concatenate[S, P2], R], instance: S,
                owner: type | None = None) -> BoundCachedCallable[P2, R]: ...

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        return BoundCachedCallable(self.cache, instance)

    def key_for(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The Redis key a call with these arguments reads and writes."""
        return self.cache.public_key_for(args, kwargs)

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> int:
        """Delete the value a call with these arguments would read; returns 1 if it existed."""
        return self.cache.invalidate(args, kwargs)

    async def ainvalidate(self, *args: P.args, **kwargs: P.kwargs) -> int:
        return await self.cache.ainvalidate(args, kwargs)

    def __repr__(self) -> str:
        return f"<redis_cache {self.cache.name!r} of {self.cache.binder.func_name}>"


class BoundCachedCallable(Generic[P, R]):
    """A cached method bound to its instance (what ``instance.method`` gives)."""

    __slots__ = ("_call", "cache", "instance")

    def __init__(self, cached: CachedFunction, instance: Any) -> None:
        self.cache = cached
        self.instance = instance
        self._call = cached.run

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        result: R = self._call((self.instance, *args), kwargs)
        return result

    def key_for(self, *args: P.args, **kwargs: P.kwargs) -> str:
        return self.cache.public_key_for((self.instance, *args), kwargs)

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> int:
        return self.cache.invalidate((self.instance, *args), kwargs)

    async def ainvalidate(self, *args: P.args, **kwargs: P.kwargs) -> int:
        return await self.cache.ainvalidate((self.instance, *args), kwargs)

    def __repr__(self) -> str:
        return f"<bound redis_cache {self.cache.name!r} of {self.instance!r}>"


def redis_cache(
    key: str,
    ttl: TTL = DEFAULT,
    invalidate_on: Iterable[str] = (),
    cache_none: bool = False,
    invalidate_on_missing: str = "pattern",
    local: bool = False,
) -> Callable[[Callable[P, R]], CachedCallable[P, R]]:
    """Cache a function's JSON-able result in Redis under ``key`` (a template).

    ``ttl`` omitted uses ``DEFAULT_TTL``; ``ttl=None`` never expires.
    ``invalidate_on`` channels delete the key when their events arrive; an
    event missing a placeholder invalidates every key of the template by
    pattern, or nothing with ``invalidate_on_missing="skip"``. ``local=True`` keeps hot values in
    this process's memory too, coherent through Redis's invalidations (:mod:`.near`).
    """
    if invalidate_on_missing not in ("pattern", "skip"):
        raise ValueError(f"invalidate_on_missing must be 'pattern' or 'skip', not {invalidate_on_missing!r}.")
    if isinstance(invalidate_on, str):
        invalidate_on = [invalidate_on]
    channels = tuple(invalidate_on)

    def decorator(func: Callable[P, R]) -> CachedCallable[P, R]:
        cached = CachedFunction(func, key, ttl, cache_none, local)
        source = f"{getattr(func, '__module__', '?')}.{cached.binder.func_name}"
        register(Registration(cached.template, channels, source, ttl=ttl, on_missing=invalidate_on_missing))
        wrapper: CachedCallable[P, R] = CachedCallable(cached)
        if cached.is_async:
            markcoroutinefunction(wrapper)
        return wrapper

    return decorator
