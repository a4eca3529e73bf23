"""Redis Cluster: ``redis+cluster://`` URLs, slot-aware multi-key work, and the app on a real 3-primary cluster.

The suites parametrised with ``topology`` run every feature on a Cluster too; here is what only a Cluster has.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import override_settings

from supergraph_messaging import CacheManager, RedisSubscriber, redis_cache, redis_publish
from supergraph_messaging.checks import check_settings
from supergraph_messaging.exceptions import MessagingError
from supergraph_messaging.redis.keys import key_slot, lease_key
from supergraph_messaging.redis.urls import parse_cluster
from tests.conftest import pointed_at, topology_setup
from tests.support.topologies import ClusterSetup


def test_cluster_urls_parse_and_a_database_number_is_refused() -> None:
    target = parse_cluster("rediss+cluster://app:s%40cret@10.0.0.1:7000,[::1]:7001")
    assert target.nodes == (("10.0.0.1", 7000), ("::1", 7001))
    assert (target.username, target.password, target.ssl) == ("app", "s@cret", True)
    with pytest.raises(MessagingError, match="only database 0"):
        parse_cluster("redis+cluster://h:7000/2")
    with pytest.raises(MessagingError, match="host:port"):
        parse_cluster("redis+cluster://h/0")


@pytest.mark.parametrize(("settings", "ids"), [
    ({"REDIS_URL": "redis+cluster://h:7000,h:7001"}, set()),
    ({"REDIS_URL": "redis+cluster://app:pw@h:7000/3"}, {"supergraph_messaging.E006"}),
    ({"REDIS_URL": "redis+cluster://h:7000", "KEY_PREFIX": "{app}:"}, {"supergraph_messaging.E010"}),
    ({"REDIS_URL": "redis://h:6379/0", "KEY_PREFIX": "{app}:"}, set()),  # one node: a tag is harmless
])
def test_check_names_what_cannot_work_on_a_cluster(settings: dict[str, Any], ids: set[str]) -> None:
    with override_settings(SUPERGRAPH_MESSAGING=settings):
        messages = check_settings()
    assert {m.id for m in messages if m.id in ("supergraph_messaging.E006", "supergraph_messaging.E010")} == ids
    assert all("pw" not in (m.hint or "") + m.msg for m in messages)
    if ids == {"supergraph_messaging.E006"}:
        assert any("database '3'" in m.msg for m in messages)


@pytest.mark.parametrize("key", ["cam:mac:AA", "user:{42}:cart", "a{}b{c}", "a{b", "ü:1", "x}y{"])
def test_a_lease_shares_its_key_slot_and_the_key_stays_as_it_is(key: str) -> None:
    from redis.crc import key_slot as redis_key_slot

    lease = lease_key(key, clustered=True)
    assert lease.startswith(key + "~lease")
    assert redis_key_slot(lease.encode()) == redis_key_slot(key.encode()) == key_slot(key)
    assert lease_key(key) == key + "~lease"  # one node, Sentinel: the first release's name


@pytest.fixture
def cluster() -> Iterator[ClusterSetup]:
    setup: ClusterSetup = topology_setup("cluster")
    setup.flush()
    with pointed_at(setup.url()):
        yield setup


def test_invalidate_pattern_removes_exactly_the_matching_keys_on_every_primary(cluster: ClusterSetup) -> None:
    manager = CacheManager(prefix="spread")
    for i in range(3000):
        manager.set(f"hit:{i}", i)
        manager.set(f"miss:{i}", i)
    per_node = [n.client().dbsize() for n in cluster.primaries]
    assert len(per_node) == 3 and min(per_node) > 1000, per_node
    assert manager.invalidate_pattern("hit:*") == 3000
    assert manager.keys("hit:*") == [] and len(manager.keys("miss:*")) == 3000
    assert asyncio.run(manager.ainvalidate_pattern("miss:1*")) == 1111
    assert len(manager.keys()) == 3000 - 1111


def test_invalidating_keys_of_many_slots_deletes_them_and_their_leases(cluster: ClusterSetup) -> None:
    conn = cluster.client()
    keys = [f"many:{i}" for i in range(200)]
    for key in keys:
        conn.set(key, "1")
        conn.set(lease_key(key, clustered=True), "a-fill")
    assert CacheManager().invalidate(*keys, "many:absent") == 200
    # (not dbsize: the stats flusher of an earlier test may write its hash here meanwhile)
    assert sorted(conn.scan_iter(match="many:*")) == []


async def test_subscriber_on_a_cluster_hears_publishes_sent_to_any_node(cluster: ClusterSetup) -> None:
    received: list[Any] = []
    done = asyncio.Event()
    sub = RedisSubscriber()

    @sub.on("cluster.news")
    async def handler(data: Any) -> None:
        received.append(data["n"])
        if len(received) == 3:
            done.set()

    await sub.start()
    try:
        redis_publish("cluster.news", {"n": 1})
        for node in cluster.nodes[1:3]:  # straight to two other nodes: the cluster bus carries it
            node.client().publish("cluster.news", b'{"n": 2}')
        await asyncio.wait_for(done.wait(), 5)
    finally:
        await sub.stop()
    assert sorted(received) == [1, 2, 2]


def test_publishes_of_new_clients_all_enter_at_one_node(cluster: ClusterSetup) -> None:
    """Successive publishes keep their order only if they enter at one node (across nodes they can
    cross on the cluster bus). redis-py sent a new asyncio client's first PUBLISH to another node."""
    from supergraph_messaging.redis.client import async_client, sync_client

    def publishes() -> list[int]:
        return [int(n.client().info("commandstats").get("cmdstat_publish", {}).get("calls", 0))
                for n in cluster.primaries]

    async def five(client: Any) -> None:
        try:
            for n in range(5):
                await client.publish("cluster.order", n)
        finally:
            await client.aclose()

    def nodes_used(before: list[int]) -> int:
        return sum(1 for a, b in zip(before, publishes(), strict=True) if b > a)

    spread = []
    for _ in range(8):  # each client on its own: each may have another default node
        before = publishes()
        asyncio.run(five(async_client(cluster.url())))
        spread.append(nodes_used(before))
        before = publishes()
        with sync_client(cluster.url()) as client:
            for n in range(5):
                client.publish("cluster.order", n)
        spread.append(nodes_used(before))
    assert spread == [1] * 16, spread


def test_a_cluster_nobody_answers_is_redis_unavailable_and_the_decorator_fails_open() -> None:
    from supergraph_messaging.exceptions import RedisUnavailable
    from tests.support.redis_server import free_port

    url = f"redis+cluster://127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    @redis_cache(key="down:{n}")
    def item(n: int) -> int:
        return n * 2

    with override_settings(SUPERGRAPH_MESSAGING={"REDIS_URL": url, "SOCKET_CONNECT_TIMEOUT": 0.2}):
        with pytest.raises(RedisUnavailable, match=r"redis\+cluster://127\.0\.0\.1"):
            CacheManager().get("x")
        assert item(4) == 8
