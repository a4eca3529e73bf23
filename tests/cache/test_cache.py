from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from django.test import override_settings

from supergraph_messaging import CacheManager, RedisUnavailable
from tests.conftest import lease
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.usefixtures("topology")


def test_set_get_json_with_prefix(redis_conn: Any) -> None:
    cache = CacheManager(prefix="camera")
    cache.set("mac:AA", {"id": 1, "tags": ["a"]})
    assert json.loads(redis_conn.get("camera:mac:AA")) == {"id": 1, "tags": ["a"]}
    assert cache.get("mac:AA") == {"id": 1, "tags": ["a"]}
    assert cache.get("mac:missing", "dflt") == "dflt"
    assert CacheManager().get("camera:mac:AA") == {"id": 1, "tags": ["a"]}


def test_ttl_default_explicit_and_none(redis_conn: Any) -> None:
    cache = CacheManager()
    cache.set("a", 1)
    assert 3590 <= cache.ttl("a") <= 3600  # DEFAULT_TTL
    cache.set("b", 1, ttl=10)
    assert 9 <= cache.ttl("b") <= 10
    cache.set("c", 1, ttl=None)
    assert cache.ttl("c") is None and redis_conn.ttl("c") == -1
    assert cache.ttl("missing") is None
    with pytest.raises(ValueError):
        cache.set("d", 1, ttl=0)


def test_key_prefix_setting_applies_to_both(redis_conn: Any) -> None:
    with override_settings(SUPERGRAPH_MESSAGING={"KEY_PREFIX": "svc1:"}):
        CacheManager(prefix="camera").set("mac:AA", 1)
        assert redis_conn.get("svc1:camera:mac:AA") == b"1"
        assert CacheManager(prefix="camera").keys() == ["mac:AA"]


def test_invalidate_and_pattern(redis_conn: Any) -> None:
    cache = CacheManager(prefix="user")
    for i in range(10):
        cache.set(f"{i}", i)
    redis_conn.set("userx", "keep")
    redis_conn.set(lease("user:1"), "token")
    assert cache.invalidate("1", "2", "nope") == 2
    assert redis_conn.get(lease("user:1")) is None
    assert cache.keys() == ["0", *[str(i) for i in range(3, 10)]]
    assert cache.invalidate_pattern("*") == 8
    assert redis_conn.get("userx") == b"keep"


def test_set_cancels_a_fill_in_progress(redis_conn: Any) -> None:
    redis_conn.set(lease("k"), "someone")
    CacheManager().set("k", 1)
    assert redis_conn.get(lease("k")) is None


async def test_async_twins(redis_conn: Any) -> None:
    cache = CacheManager(prefix="a")
    await cache.aset("x", {"v": 1}, ttl=5)
    assert await cache.aget("x") == {"v": 1}
    assert 4 <= (await cache.attl("x") or 0) <= 5
    await cache.aset("y", 2)
    assert await cache.ainvalidate("x") == 1
    assert await cache.ainvalidate_pattern("*") == 1
    assert await cache.aget("y") is None


@pytest.mark.topology("single")
def test_unreachable_redis_raises_clear_error() -> None:
    server = RedisServer()
    with override_settings(SUPERGRAPH_MESSAGING={"REDIS_URL": server.url}), pytest.raises(
        RedisUnavailable, match=f"127.0.0.1:{server.port}"
    ):
        CacheManager().get("x")


def test_invalidate_pattern_escapes_prefix(redis_conn: Any) -> None:
    cache = CacheManager(prefix="we*ird")
    cache.set("1", 1)
    redis_conn.set("weXird:1", 1)
    assert cache.invalidate_pattern("*") == 1
    assert redis_conn.get("weXird:1") == b"1"


@pytest.mark.slow
@pytest.mark.topology("single")
def test_invalidate_pattern_over_a_million_keys(own_redis: RedisServer) -> None:
    conn = own_redis.client()
    for batch in range(100):
        pipe = conn.pipeline(transaction=False)
        pipe.mset({f"other:{batch}:{i}": "1" for i in range(9000)})
        pipe.mset({f"hit:{batch}:{i}": "1" for i in range(1000)})
        pipe.execute()
    assert conn.dbsize() == 1_000_000
    with override_settings(SUPERGRAPH_MESSAGING={"REDIS_URL": own_redis.url}):
        deleted = CacheManager(prefix="hit").invalidate_pattern("*")
    assert deleted == 100_000
    # (not dbsize(): the stats flusher may have added its hash meanwhile)
    assert sum(1 for _ in conn.scan_iter(match="other:*", count=100_000)) == 900_000
    assert not list(conn.scan_iter(match="hit:*", count=100_000))
    assert conn.exists("other:0:0", "other:99:8999") == 2


async def test_async_pattern_many_keys(redis_conn: Any) -> None:
    redis_conn.mset({f"p:{i}": 1 for i in range(2500)})
    assert await CacheManager(prefix="p").ainvalidate_pattern("*") == 2500
    await asyncio.sleep(0)
