"""``CacheManager``: plain keys, JSON values, readable from any language.

Keys are ``KEY_PREFIX + prefix + ":" + key`` with no Django key versioning,
so ``CacheManager(prefix="camera").set("mac:AA", v)`` and
``@redis_cache(key="camera:mac:{mac}")`` address the same Redis key.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import redis

from supergraph_messaging.cache import near
from supergraph_messaging.conf import conf
from supergraph_messaging.redis import cluster, scripts
from supergraph_messaging.redis.client import RedisClient, get_redis_client
from supergraph_messaging.redis.cluster import SCAN_COUNT
from supergraph_messaging.redis.keys import escape_glob, full_key, is_lease, lease_key, version_key
from supergraph_messaging.redis.serialization import UNDECODABLE, decode_or_undecodable, dumps

logger = logging.getLogger("supergraph_messaging.cache")
_reported_undecodable: list[str] = []  # the first key only: one warning per process


class _Default:
    def __repr__(self) -> str:
        return "DEFAULT_TTL"


DEFAULT: Final = _Default()
TTL = int | float | None | _Default


def ttl_ms(ttl: TTL) -> int:
    """Milliseconds for ``SET PX``; 0 means no expiry.

    ``ttl`` omitted → ``DEFAULT_TTL``; ``ttl=None`` → the key never expires.
    """
    if isinstance(ttl, _Default):
        ttl = conf.default_ttl
    if ttl is None:
        return 0
    if ttl <= 0:
        raise ValueError(f"ttl must be positive or None, got {ttl!r}")
    return int(ttl * 1000)


class CacheManager:
    """Get, set and invalidate JSON values under an optional key prefix.

    Errors reaching Redis raise :class:`~supergraph_messaging.RedisUnavailable`
    naming the URL (``@redis_cache`` is the fail-open layer, not this).
    """

    def __init__(self, prefix: str | None = None, url: str | None = None, local: bool = False) -> None:
        """``local=True``: reads are served from this process's near cache when it holds the key
        (:mod:`.near`), coherent with every writer through Redis's invalidations."""
        self.prefix = prefix
        self.url = url
        self.local = local
        if local:
            near.watch(f"{prefix}:" if prefix else "")

    def __repr__(self) -> str:
        return f"CacheManager(prefix={self.prefix!r})"

    @property
    def client(self) -> RedisClient:
        return get_redis_client(self.url)

    def key(self, key: str) -> str:
        """The Redis key that ``key`` addresses."""
        return full_key(key, self.prefix)

    def _pattern(self, pattern: str) -> str:
        return escape_glob(full_key("", self.prefix)) + pattern

    def _relative(self, raw: bytes) -> str:
        return raw.decode()[len(full_key("", self.prefix)) :]

    def _decode(self, raw: bytes | str, key: str, default: Any) -> Any:
        """An undecodable value (not JSON: another writer, damage) reads as missing, logged once."""
        value = decode_or_undecodable(raw)
        if value is UNDECODABLE:
            if not _reported_undecodable:
                _reported_undecodable.append(key)
                logger.warning("%r holds a value that is not JSON (%d bytes, starting %r); read as missing.",
                               self.key(key), len(raw), raw[:20])
            return default
        return value

    # -- sync ---------------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        client = self.client
        full = self.key(key)
        if not self.local:
            with client.boundary:
                raw = client.redis.get(full)
            return default if raw is None else self._decode(raw, key, default)
        cache = near.near_cache(client)
        raw = cache.get(full)
        if raw is None:
            mark = cache.begin(full)
            reply: Any = None
            try:
                with client.boundary:
                    pipe: Any = client.redis.pipeline(transaction=False)
                    reply = pipe.get(full).pttl(full).execute()
            finally:
                raw = cache.settle(full, mark, reply)
        return default if raw is None else self._decode(raw, key, default)

    def set(self, key: str, value: Any, ttl: TTL = DEFAULT, version: str | None = None) -> None:
        """Write ``value``; also cancels any fill in progress (its lease). ``version``: the id of the
        change the value was built from (``CacheSync`` passes its event's id): that change's own
        invalidation leaves the value in place instead of deleting what it just wrote."""
        full, payload, ms = self.key(key), dumps(value), ttl_ms(ttl)
        client = self.client
        clustered = client.cluster
        try:
            with client.boundary:
                client.script(scripts.SET, [full, lease_key(full, clustered), version_key(full, clustered)],
                              [payload, ms, version or ""])
        finally:
            # after the write: a read that raced it may have kept the old value meanwhile
            near.forget(client, full)

    def invalidate(self, *keys: str) -> int:
        """Delete keys (and their leases); returns how many values existed."""
        if not keys:
            return 0
        full = [self.key(k) for k in keys]
        client = self.client
        try:
            with client.boundary:
                if client.cluster:
                    return cluster.invalidate(client.redis, full)
                pipe = client.redis.pipeline(transaction=True)
                pipe.unlink(*full)
                pipe.unlink(*[lease_key(k) for k in full], *[version_key(k) for k in full])
                return int(pipe.execute()[0])
        finally:
            # after the write: a read that raced it may have kept the old value meanwhile
            near.forget(client, *full)

    def invalidate_pattern(self, pattern: str) -> int:
        """Delete every key matching the glob (``SCAN`` + batched ``UNLINK``, never ``KEYS``)."""
        client = self.client
        try:
            with client.boundary:
                if client.cluster:
                    return cluster.unlink_matching(client.redis, self._pattern(pattern))
                return unlink_matching(client.redis, self._pattern(pattern))
        finally:
            # after the write: a read that raced it may have kept the old value meanwhile
            near.forget_matching(client, self._pattern(pattern))

    def ttl(self, key: str) -> int | None:
        """Seconds left; ``None`` when the key is missing or never expires."""
        client = self.client
        with client.boundary:
            value = int(client.redis.ttl(self.key(key)))
        return value if value >= 0 else None

    def keys(self, pattern: str = "*") -> list[str]:
        """Keys under this prefix matching the glob, relative to it (leases left out)."""
        client = self.client
        with client.boundary:
            found = list(client.redis.scan_iter(match=self._pattern(pattern), count=SCAN_COUNT))
        return sorted(self._relative(k) for k in found if not is_lease(k))

    # -- async --------------------------------------------------------------
    async def aget(self, key: str, default: Any = None) -> Any:
        client = self.client
        full = self.key(key)
        if not self.local:
            with client.boundary:
                raw = await client.aredis.get(full)
            return default if raw is None else self._decode(raw, key, default)
        cache = near.near_cache(client)
        raw = cache.get(full)
        if raw is None:
            mark = cache.begin(full)
            reply: Any = None
            try:
                with client.boundary:
                    apipe: Any = client.aredis.pipeline(transaction=False)
                    reply = await apipe.get(full).pttl(full).execute()
            finally:
                raw = cache.settle(full, mark, reply)
        return default if raw is None else self._decode(raw, key, default)

    async def aset(self, key: str, value: Any, ttl: TTL = DEFAULT, version: str | None = None) -> None:
        full, payload, ms = self.key(key), dumps(value), ttl_ms(ttl)
        client = self.client
        clustered = client.cluster
        try:
            with client.boundary:
                await client.ascript(scripts.SET, [full, lease_key(full, clustered), version_key(full, clustered)],
                                     [payload, ms, version or ""])
        finally:
            # after the write: a read that raced it may have kept the old value meanwhile
            near.forget(client, full)

    async def ainvalidate(self, *keys: str) -> int:
        if not keys:
            return 0
        full = [self.key(k) for k in keys]
        client = self.client
        try:
            with client.boundary:
                if client.cluster:
                    return await cluster.ainvalidate(client.aredis, full)
                pipe = client.aredis.pipeline(transaction=True)
                pipe.unlink(*full)
                pipe.unlink(*[lease_key(k) for k in full], *[version_key(k) for k in full])
                return int((await pipe.execute())[0])
        finally:
            # after the write: a read that raced it may have kept the old value meanwhile
            near.forget(client, *full)

    async def ainvalidate_unless(self, keys: list[str], version: str) -> int:
        """Delete keys, except those the change ``version`` itself wrote (``set(..., version=...)``):
        the invalidation published for a change must not undo the cache write made for it."""
        if not keys:
            return 0
        full = [self.key(k) for k in keys]
        client = self.client
        clustered = client.cluster
        conn = client.aredis

        async def run() -> list[Any]:
            pipe = conn.pipeline(transaction=False)
            for key in full:
                pipe.execute_command("EVALSHA", scripts.sha(scripts.INVALIDATE_UNLESS), 3, key,
                                     lease_key(key, clustered), version_key(key, clustered), version)
            return list(await pipe.execute())

        try:
            with client.boundary:
                try:
                    replies = await run()
                except redis.exceptions.NoScriptError:  # a restarted Redis forgot it
                    await conn.script_load(scripts.INVALIDATE_UNLESS)
                    replies = await run()
        finally:
            near.forget(client, *full)
        return sum(int(n) for n in replies)

    async def ainvalidate_pattern(self, pattern: str) -> int:
        client = self.client
        conn = client.aredis
        try:
            with client.boundary:
                if client.cluster:
                    return await cluster.aunlink_matching(conn, self._pattern(pattern))

                async def unlink(batch: list[bytes]) -> int:
                    return int(await conn.unlink(*batch))

                return await cluster.aunlink_scanned(conn, self._pattern(pattern), unlink)
        finally:
            # after the write: a read that raced it may have kept the old value meanwhile
            near.forget_matching(client, self._pattern(pattern))

    async def attl(self, key: str) -> int | None:
        client = self.client
        with client.boundary:
            value = int(await client.aredis.ttl(self.key(key)))
        return value if value >= 0 else None


def unlink_matching(conn: Any, match: str) -> int:
    """``UNLINK`` every raw key matching the glob ``match``, in batches; returns the count."""
    return cluster.unlink_scanned(conn, match, lambda batch: int(conn.unlink(*batch)))
