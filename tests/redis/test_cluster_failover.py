"""Kill -9 one primary of a 3+3 Redis Cluster during cache writes, fills, hits, publishes and a subscription.

The replica takes over after ``cluster-node-timeout`` (1 s here) and an election; this counts what the
app lost in the window and how soon each kind of operation works again after the takeover.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from supergraph_messaging import CacheManager, redis_cache, redis_publish
from supergraph_messaging.exceptions import RedisUnavailable
from supergraph_messaging.redis import client
from supergraph_messaging.signals import reconnected
from tests.conftest import EventCollector, pointed_at
from tests.support.topologies import ClusterSetup, server_version

pytestmark = pytest.mark.slow


def took_over(setup: ClusterSetup, dead_port: int) -> bool:
    """The cluster is whole again without the killed node (its replica took its slots)."""
    for node in setup.nodes:
        if node.port == dead_port or node.process is None or node.process.poll() is not None:
            continue
        info = node.client().execute_command("CLUSTER", "INFO").decode()
        return "cluster_state:ok" in info and len(setup.primaries) == 3
    return False


def test_kill_a_primary_the_app_works_again_within_5_s_of_the_takeover() -> None:
    if server_version() < (7, 0):
        pytest.skip("the cluster harness needs redis-server >= 7 (CLUSTER ADDSLOTSRANGE)")
    setup = ClusterSetup(replicas=1)
    victim = setup.nodes[0]  # a primary, and the node the subscriber (first of the URL) is connected to
    results: dict[str, list[tuple[float, bool]]] = {"write": [], "fill": [], "hit": [], "publish": []}
    acked_writes: list[int] = []
    published: list[tuple[int, float]] = []  # (n, sent at)
    stop = threading.Event()
    reconnects: list[float] = []

    def on_reconnect(sender: Any, **kwargs: Any) -> None:
        reconnects.append(time.monotonic())

    @redis_cache(key="failover:item:{n}", ttl=60)
    def item(n: int) -> dict[str, int]:
        return {"n": n}

    def workload() -> None:
        manager = CacheManager(prefix="failover")
        n = 0
        while not stop.is_set():
            now = time.monotonic()
            try:
                manager.set(f"w:{n}", n)
                acked_writes.append(n)
                results["write"].append((now, True))
            except RedisUnavailable:
                results["write"].append((now, False))
            # fail-open: the decorator always answers; a fill or hit counts when it reached Redis
            before = client.get_redis_client().breaker.failing
            item(n)  # a miss and fill
            item(n)  # a hit
            ok = not client.get_redis_client().breaker.failing and not before
            results["fill"].append((now, ok))
            results["hit"].append((now, ok))
            try:
                redis_publish("failover.events", {"n": n})
                published.append((n, now))
                results["publish"].append((now, True))
            except RedisUnavailable:
                results["publish"].append((now, False))
            n += 1
            time.sleep(0.002)

    reconnected.connect(on_reconnect)
    try:
        with pointed_at(setup.url()), EventCollector("failover.events") as events:
            thread = threading.Thread(target=workload)
            thread.start()
            time.sleep(1.0)
            killed_at = time.monotonic()
            victim.kill()
            deadline = killed_at + 20
            while not took_over(setup, victim.port):
                assert time.monotonic() < deadline, "the replica never took over"
                time.sleep(0.05)
            took_over_at = time.monotonic()
            time.sleep(6.0)
            stop.set()
            thread.join(10)
            time.sleep(0.5)
            received = {data["n"] for _channel, data in events.settle(0.5)}
        conn = setup.client()
        manager_keys = {int(k.rsplit(b":", 1)[1]) for k in conn.scan_iter(match="failover:w:*", count=1000)}
    finally:
        reconnected.disconnect(on_reconnect)
        setup.close()

    def resumed(kind: str) -> float:
        """Seconds after the takeover from which every operation of ``kind`` succeeded."""
        last_failure = max((t for t, ok in results[kind] if not ok), default=killed_at)
        return max(0.0, last_failure - took_over_at)

    lost_writes = [n for n in acked_writes if n not in manager_keys]
    lost_published = [n for n, _t in published if n not in received]
    after = [n for n, t in published if t > took_over_at + 5]
    refused = ", ".join(f"{kind} {sum(not ok for _t, ok in v)}" for kind, v in results.items())
    print(f"\nkill -9 of a primary: takeover {took_over_at - killed_at:.1f} s after the kill; resumed after the "
          f"takeover: writes {resumed('write'):.2f} s, fills/hits {resumed('fill'):.2f} s, publishes "
          f"{resumed('publish'):.2f} s; refused in the window (RedisUnavailable, fail-open): "
          f"{refused}; lost: {len(lost_writes)} of {len(acked_writes)} acknowledged writes "
          f"(acknowledged by the dead primary, not yet replicated), {len(lost_published)} of {len(published)} "
          f"publishes (sent while the subscriber reconnected); subscriber reconnects: {len(reconnects)}")
    for kind in results:
        assert resumed(kind) <= 5.0, kind
        assert any(ok for t, ok in results[kind] if t > took_over_at), kind
    assert reconnects, "the subscriber's node was killed: it must have reconnected (and said so)"
    assert after and not [n for n in after if n not in received], "publishes after the recovery all arrive"

