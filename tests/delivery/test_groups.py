"""Durable consumers (consumer groups) with a real messaging_listen worker: nothing lost across its death."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import override_settings

from supergraph_messaging import RedisSubscriber, aredis_publish, publish_event, redis_publish
from supergraph_messaging.delivery import streams
from supergraph_messaging.delivery.consumer_groups import GroupConsumer
from supergraph_messaging.events import flush_events
from tests.conftest import manage, wait_for
from tests.testapp.models import CameraModel

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
DURABLE = {"DELIVERY": "durable", "SERVICE_NAME": "tests", "ADMIN_KEY_PATTERNS": ["*"]}


@pytest.fixture
def durable() -> Iterator[None]:
    with override_settings(SUPERGRAPH_MESSAGING=DURABLE):
        yield


class Worker:
    def __init__(self, redis_conn: Any, *args: str, **env: str) -> None:
        self.proc = manage("messaging_listen", *args, SGM_DELIVERY="durable", **env)
        assert self.proc.stdout is not None
        self.proc.stdout.readline()
        assert "consumer groups" in self.proc.stdout.readline()
        wait_for(lambda: redis_conn.pubsub_numsub("sgm:relay")[0][1] == 1, timeout=15)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(30)


def test_events_published_while_the_worker_is_down_are_handled_when_it_returns(redis_conn: Any,
                                                                                durable: None) -> None:
    Worker(redis_conn).stop()  # the service's groups exist from its first start on
    for n in range(20):
        redis_publish("testapp.flaky", {"n": n})  # durable: appended to the stream, nobody listening
    worker = Worker(redis_conn)
    try:
        wait_for(lambda: redis_conn.llen("testapp:flaky") == 20, timeout=10)
    finally:
        worker.stop()
    handled = [int(n) for n in redis_conn.lrange("testapp:flaky", 0, -1)]
    print(f"\nworker down while 20 events were published: {20 - len(handled)} lost")
    assert handled == list(range(20))


async def test_stop_ends_a_loop_that_lost_its_cancel(redis_conn: Any, durable: None) -> None:
    """A handler that catches the cancel, as Python 3.11's ``wait_for`` inside every redis-py command does when
    the reply arrives with it, must not keep the worker running (a CI run's worker did not stop in 5 s)."""
    entered = asyncio.Event()
    swallowed: list[int] = []
    subscriber = RedisSubscriber()

    @subscriber.on("testapp.stubborn")
    async def stubborn(data: Any) -> None:
        entered.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            swallowed.append(data["n"])

    consumer = GroupConsumer(subscriber.take_exact_handlers())
    await consumer.start()
    loops = list(consumer._tasks)
    await aredis_publish("testapp.stubborn", {"n": 1})
    async with asyncio.timeout(10):
        await entered.wait()
    stopping = asyncio.ensure_future(consumer.stop())
    done, _ = await asyncio.wait({stopping}, timeout=10)
    if not done:
        stopping.cancel()
    assert done, "stop() did not return"
    assert swallowed == [1]
    assert all(loop.done() for loop in loops), "stop() abandoned a consumer loop that was still running"


def test_the_consumer_name_is_the_commands_argument(redis_conn: Any, durable: None) -> None:
    worker = Worker(redis_conn, "--consumer", "worker-a", SGM_CONSUMER="from-the-environment")
    try:
        redis_publish("testapp.flaky", {"n": 1})
        wait_for(lambda: redis_conn.llen("testapp:flaky") == 1, timeout=10)
    finally:
        worker.stop()
    stream = streams.keys("testapp.flaky")[0]
    group = next(g["name"] for g in redis_conn.xinfo_groups(stream) if g["name"].endswith(b".flaky"))
    assert [c["name"] for c in redis_conn.xinfo_consumers(stream, group)] == [b"worker-a"]


def test_a_failing_event_is_retried_dead_lettered_and_the_rest_goes_on(redis_conn: Any, durable: None) -> None:
    worker = Worker(redis_conn)
    try:
        for n in range(5):
            redis_publish("testapp.flaky", {"n": n, "fail": n == 2})
        wait_for(lambda: redis_conn.llen("testapp:flaky") == 4, timeout=15)
        dead = streams.keys("testapp.flaky")[0] + ":dead"
        wait_for(lambda: redis_conn.xlen(dead) == 1, timeout=5)
    finally:
        worker.stop()
    assert [int(n) for n in redis_conn.lrange("testapp:flaky", 0, -1)] == [0, 1, 3, 4]
    (entry,) = redis_conn.xrange(dead)
    assert json.loads(entry[1][b"d"])["n"] == 2 and b"RuntimeError" in entry[1][b"reason"]


def test_worker_killed_mid_handler_the_effect_still_happens_once(redis_conn: Any, durable: None) -> None:
    Worker(redis_conn).stop()
    event_id = "11111111-1111-1111-1111-111111111111"
    publish_event("testapp.orders", {"id": 1, "sleep": 3, "_meta": {"event_id": event_id}})
    flush_events()
    first = Worker(redis_conn, SGM_CLAIM_IDLE="1")
    stream, group = streams.keys("testapp.orders")[0], "tests.tests.testapp.subscribers.apply_order"
    wait_for(lambda: redis_conn.xpending(stream, group)["pending"] == 1, timeout=15)  # delivered to it
    time.sleep(0.5)  # the handler is inside its transaction, sleeping
    first.stop(signal.SIGKILL)
    assert CameraModel.objects.filter(name="order-1").count() == 0  # rolled back with the process
    second = Worker(redis_conn, SGM_CLAIM_IDLE="1")
    try:
        wait_for(lambda: CameraModel.objects.filter(name="order-1").exists(), timeout=20)
        # The same event delivered once more (a duplicate in the stream): its effect is not repeated.
        entry = redis_conn.xrange(streams.keys("testapp.orders")[0])[0][1]
        redis_conn.xadd(streams.keys("testapp.orders")[0], {b"o": entry[b"o"], b"d": entry[b"d"]})
        time.sleep(4.5)
    finally:
        second.stop()
    effects = CameraModel.objects.filter(name="order-1").count()
    print(f"\nkill -9 mid-handler, then a duplicate delivery: the effect happened {effects} time(s)")
    assert effects == 1


def test_invalidations_missed_while_the_worker_was_down_are_applied(redis_conn: Any, durable: None) -> None:
    Worker(redis_conn).stop()
    redis_conn.mset({f"camera:mac:D{i}": b"stale" for i in range(10)})
    for i in range(10):
        redis_publish("camera.updated", {"mac_address": f"D{i}"})
    assert redis_conn.exists(*[f"camera:mac:D{i}" for i in range(10)]) == 10
    worker = Worker(redis_conn)
    try:
        wait_for(lambda: redis_conn.exists(*[f"camera:mac:D{i}" for i in range(10)]) == 0, timeout=10)
    finally:
        worker.stop()


def test_history_lost_with_redis_invalidates_the_templates_by_pattern(own_redis: Any) -> None:
    """Redis restarted without persistence: the streams and groups are gone; the worker notices,
    invalidates every key of the channel's templates and sends stream_reset."""
    with override_settings(SUPERGRAPH_MESSAGING={**DURABLE, "REDIS_URL": own_redis.url}):
        conn = own_redis.client()
        worker = Worker(conn, SGM_TEST_REDIS_PORT=str(own_redis.port))
        try:
            # Frozen across the restart so that it cannot notice the reset before the keys exist
            # (CI once saw it invalidate an empty keyspace first).
            worker.proc.send_signal(signal.SIGSTOP)
            try:
                own_redis.restart()  # no persistence: everything is gone
                conn = own_redis.client()
                conn.mset({"camera:mac:R1": b"maybe stale", "camera:mac:R2": b"maybe stale", "other": b"1"})
            finally:
                worker.proc.send_signal(signal.SIGCONT)
            wait_for(lambda: conn.exists("camera:mac:R1", "camera:mac:R2") == 0, timeout=10)
            assert conn.exists("other")
        finally:
            worker.stop()
        assert "stream_reset" in (worker.proc.stdout.read() if worker.proc.stdout else "")
