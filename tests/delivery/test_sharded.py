"""Sharded Pub/Sub on a Cluster (``SHARDED_CHANNELS``): those exact channels on their slot's node, the rest
(and every glob subscription) on plain Pub/Sub as before."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.conf import settings
from django.test import override_settings

from supergraph_messaging import RedisSubscriber, aredis_publish, publish_event, redis_publish
from supergraph_messaging.events import flush_events
from supergraph_messaging.redis import checks
from supergraph_messaging.redis.keys import key_slot
from supergraph_messaging.signals import reconnected
from tests.conftest import EventCollector, RelayThread, pointed_at, topology_setup, wait_for
from tests.redis.test_cluster_failover import took_over
from tests.support.topologies import ClusterSetup, server_version

SHARDED = {**settings.SUPERGRAPH_MESSAGING, "SHARDED_CHANNELS": ["shard*", "only.*", "leave.*", "failover.shard.*"]}


def on_each_primary(prefix: str) -> list[str]:
    """Three channel names whose slots belong to the three primaries (slots split in thirds)."""
    names: list[str] = []
    for third in range(3):
        names.append(next(c for c in (f"{prefix}.{i}" for i in range(1000))
                          if min(key_slot(c) // 5461, 2) == third))
    return names


def _needs_sharded_redis_py() -> None:
    if checks.version(redis.__version__) < checks.REDIS_PY_SHARDED_MINIMUM:
        pytest.skip(f"SHARDED_CHANNELS needs redis-py {checks.dotted(checks.REDIS_PY_SHARDED_MINIMUM)} (check E015)")


@pytest.fixture
def sharded() -> Iterator[ClusterSetup]:
    _needs_sharded_redis_py()
    setup = topology_setup("cluster")
    setup.flush()
    with pointed_at(setup.url()), override_settings(SUPERGRAPH_MESSAGING=SHARDED):
        yield setup


class Inbox:
    def __init__(self) -> None:
        self.items: list[tuple[str, Any]] = []

    async def handler(self, data: Any, channel: str) -> None:
        self.items.append((channel, data))

    async def wait(self, count: int, timeout: float = 5.0) -> list[tuple[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.items) < count:
            assert time.monotonic() < deadline, f"got {len(self.items)} of {count} messages"
            await asyncio.sleep(0.01)
        return self.items


async def test_exact_channels_on_every_primary_and_globs_arrive_in_order(sharded: ClusterSetup) -> None:
    """Sharded channels on all three primaries, a plain one and a glob beside them, in one subscriber."""
    channels = on_each_primary("shard")
    sub = RedisSubscriber()
    inbox = Inbox()
    for channel in channels:
        sub.on(channel)(inbox.handler)
    sub.on("plain.one")(inbox.handler)
    sub.on("plainglob.*")(inbox.handler)
    await sub.start()
    try:
        for n in range(100):
            for channel in channels:
                await aredis_publish(channel, {"n": n})
        redis_publish("plain.one", {"n": 0})
        redis_publish("plainglob.x", {"n": 0})
        items = await inbox.wait(302)
    finally:
        await sub.stop()
    for channel in channels:
        assert [d["n"] for c, d in items if c == channel] == list(range(100)), channel
    assert ("plain.one", {"n": 0}) in items and ("plainglob.x", {"n": 0}) in items


def test_sharded_messages_reach_shard_subscribers_only(sharded: ClusterSetup) -> None:
    """SPUBLISH: a plain SUBSCRIBE of the same name hears nothing, and the receiver count is the owner's."""
    channel = on_each_primary("only")[1]
    owner = sharded.client().get_node_from_key(channel)
    plain = sharded.client().get_redis_connection(owner).pubsub()
    plain.subscribe(channel)
    assert plain.get_message(timeout=2)["type"] == "subscribe"
    with EventCollector(channel) as events:
        assert redis_publish(channel, {"n": 1}) == 1  # the collector's shard subscription
        assert [d for _c, d in events.settle(0.3)] == [{"n": 1}]
    assert plain.get_message(timeout=0.3) is None
    plain.close()


async def test_unsubscribing_a_channel_is_not_a_lost_connection(sharded: ClusterSetup) -> None:
    channel, other = on_each_primary("leave")[:2]
    sub = RedisSubscriber()
    inbox = Inbox()
    sub.on(channel)(inbox.handler)
    sub.on(other)(inbox.handler)
    await sub.start()
    try:
        sub.remove_handler(other, inbox.handler)
        await asyncio.sleep(0.5)
        await aredis_publish(channel, {"n": 1})
        await aredis_publish(other, {"n": 2})
        await inbox.wait(1)
        await asyncio.sleep(0.3)
        assert inbox.items == [(channel, {"n": 1})]
        assert sub.reconnects == 0
    finally:
        await sub.stop()


@pytest.mark.django_db(transaction=True)
def test_events_and_durable_relay_publish_sharded(sharded: ClusterSetup) -> None:
    """ViewSet/model events (publish_event after commit) and the durable relay both SPUBLISH."""
    channel = on_each_primary("shardevents")[2]
    with EventCollector(channel) as events:
        publish_event(channel, {"n": 1})
        flush_events()
        with override_settings(SUPERGRAPH_MESSAGING={**SHARDED, "DELIVERY": "durable", "SERVICE_NAME": "tests"}), \
                RelayThread():
            publish_event(channel, {"n": 2})
            wait_for(lambda: len(events.messages) == 2, timeout=5)
    received = [d["n"] for _c, d in events.messages]
    assert received == [1, 2]


@pytest.mark.slow
def test_kill_the_primary_of_a_shard_channel_the_subscriber_follows() -> None:
    """kill -9 of the primary that serves a shard subscription: the subscriber reconnects (``reconnected``)
    to the promoted replica, and messages published after the takeover arrive; lost ones are counted."""
    if server_version() < (7, 0):
        pytest.skip("the cluster harness needs redis-server >= 7 (CLUSTER ADDSLOTSRANGE)")
    _needs_sharded_redis_py()
    setup = ClusterSetup(replicas=1)
    victim = setup.nodes[0]
    channel = on_each_primary("failover.shard")[0]  # slots 0-5461: the victim's
    reconnects: list[float] = []

    def on_reconnect(sender: Any, **kwargs: Any) -> None:
        reconnects.append(time.monotonic())

    reconnected.connect(on_reconnect)
    published: list[tuple[int, float]] = []
    try:
        with pointed_at(setup.url()), override_settings(SUPERGRAPH_MESSAGING=SHARDED), \
                EventCollector(channel) as events:
            n = 0
            killed_at = took_over_at = 0.0
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                now = time.monotonic()
                if not killed_at and n == 300:
                    killed_at = now
                    victim.kill()
                if killed_at and not took_over_at and took_over(setup, victim.port):
                    took_over_at = now
                if took_over_at and now > took_over_at + 6:
                    break
                try:
                    redis_publish(channel, {"n": n})
                    published.append((n, now))
                except ConnectionError:
                    pass
                n += 1
                time.sleep(0.003)
            received = {d["n"] for _c, d in events.settle(0.5)}
    finally:
        reconnected.disconnect(on_reconnect)
        setup.close()
    assert took_over_at, "the replica never took over"
    lost = [m for m, _t in published if m not in received]
    after = [m for m, t in published if t > took_over_at + 5]
    print(f"\nsharded Pub/Sub, kill -9 of the channel's primary: takeover {took_over_at - killed_at:.1f} s; "
          f"{len(lost)} of {len(published)} acknowledged publishes lost (at-most-once), subscriber reconnects "
          f"{len(reconnects)}, first after the kill {min(reconnects, default=0) - killed_at:.1f} s")
    assert reconnects and min(reconnects) > killed_at
    assert after and not [m for m in after if m not in received], "publishes 5 s after the takeover all arrive"
