"""Attacks 15, 16 and 17: a slow handler, a flood while it is slow, SIGTERM in the middle of it."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.conftest import manage, wait_for
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.slow


def test_a_slow_handler_stalls_nothing_else_and_sigterm_finishes_what_was_received(redis_conn: Any) -> None:
    worker = manage("messaging_listen")
    try:
        assert worker.stdout is not None
        assert "testapp.slow" in worker.stdout.readline()
        wait_for(lambda: redis_conn.pubsub_numsub("testapp.fast")[0][1] == 1, timeout=10)
        redis_conn.publish("testapp.slow", json.dumps({"sleep": 10, "n": 0}))  # one handler sleeps 10 s
        for n in range(1, 6):  # queued behind it, on its own channel
            redis_conn.publish("testapp.slow", json.dumps({"sleep": 0, "n": n}))
        time.sleep(0.2)
        for _ in range(50):  # meanwhile, another channel
            redis_conn.publish("testapp.fast", json.dumps({"t": time.time()}))
            time.sleep(0.02)
        wait_for(lambda: redis_conn.llen("testapp:fast") == 50, timeout=5)
        latencies = sorted(float(v) for v in redis_conn.lrange("testapp:fast", 0, -1))
        p50, p99 = latencies[25] * 1000, latencies[49] * 1000
        print(f"\nother channel's handler while one sleeps 10 s: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
        assert p99 <= 100
        started = time.monotonic()
        worker.send_signal(signal.SIGTERM)  # the slow handler is still sleeping, 5 messages wait behind it
        assert worker.wait(30) == 0
        handled = [int(n) for n in redis_conn.lrange("testapp:slow", 0, -1)]
        print(f"SIGTERM mid-handler: exit 0 after {time.monotonic() - started:.1f} s, handled {handled}")
        assert handled == [0, 1, 2, 3, 4, 5]  # nothing received was lost, in order
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


async def test_a_flood_while_a_handler_is_slow_loses_nothing(own_redis: RedisServer) -> None:
    """100,000 messages of 420 bytes (42 MB, past Redis's 32 MB Pub/Sub output-buffer limit) while the
    handler is stuck for 3 s: the subscriber keeps draining the socket into its own queue.

    Published at about 40,000 messages/s, inside the 3 s: a subscriber whose reading waited for the
    handler would leave all 42 MB in Redis and be cut off. Unpaced, the flood outran any Python reader
    on a loaded 2-core CI machine (76,855 and 88,658 lost in 2 of 3 full-suite runs): that measured
    parser speed against a pipelined publisher, not whether a stuck handler stalls reading."""
    from supergraph_messaging import RedisSubscriber

    received = 0
    done = asyncio.Event()
    total = 100_000

    async def handler(data: Any) -> None:
        nonlocal received
        if received == 0:
            await asyncio.sleep(3)
        received += 1
        if received == total:
            done.set()

    sub = RedisSubscriber(url=own_redis.url)
    sub.on("flood")(handler)
    await sub.start()
    try:
        code = (
            "import sys, redis\n"
            f"r = redis.Redis(port={own_redis.port})\n"
            "payload = b'{\"p\":\"' + b'x' * 410 + b'\"}'\n"
            "import time\n"
            "began = time.monotonic()\n"
            "for start in range(0, 100000, 1000):\n"
            "    pipe = r.pipeline(transaction=False)\n"
            "    for _ in range(1000):\n"
            "        pipe.publish('flood', payload)\n"
            "    pipe.execute()\n"
            "    time.sleep(max(0.0, began + (start + 1000) / 40000 - time.monotonic()))\n"
        )
        await asyncio.to_thread(subprocess.run, [sys.executable, "-c", code], check=True, timeout=120)
        try:
            await asyncio.wait_for(done.wait(), 60)
        except TimeoutError:
            pass
        lost = total - received
        print(f"\nflood of {total} x 420 B while the handler was stuck 3 s: {lost} lost, "
              f"{sub.reconnects} reconnect(s), dropped {sub.dropped}")
        assert lost == 0 and sub.reconnects == 0
    finally:
        await sub.stop()


def test_a_hanging_durable_handler_is_dead_lettered_and_sigterm_still_exits(redis_conn: Any) -> None:
    """Issue 26, item 7: a sync handler sleeping 120 s with HANDLER_TIMEOUT = 5 blocked its channel for ever,
    was never dead-lettered, and SIGTERM had not finished after 45 s."""
    from supergraph_messaging.delivery import streams
    from supergraph_messaging.delivery.consumer_groups import dead_letter_key

    env = {"SGM_DELIVERY": "durable", "SGM_HANDLER_TIMEOUT": "1", "SGM_SHUTDOWN_TIMEOUT": "2",
           "SGM_CONSUMER": "hang-test"}
    worker = manage("messaging_listen", "--no-relay", **env)
    try:
        stream = streams.keys("testapp.slow")[0]
        wait_for(lambda: redis_conn.exists(stream) and len(redis_conn.xinfo_groups(stream)) >= 1, timeout=15)

        def publish(data: dict[str, Any]) -> None:
            streams.publish(redis_conn, "testapp.slow", json.dumps(data))

        publish({"sleep": 120, "n": 0})
        publish({"sleep": 0, "n": 1})
        started = time.monotonic()
        wait_for(lambda: redis_conn.lrange("testapp:slow", 0, -1) == [b"1"], timeout=30)
        took = time.monotonic() - started
        dead = redis_conn.xrange(dead_letter_key("testapp.slow"))
        print(f"\nhanging handler, HANDLER_TIMEOUT 1 s x MAX_DELIVERIES 5: the next event handled after {took:.1f} s, "
              f"{len(dead)} dead-lettered")
        assert took <= 1 * 5 + 3
        assert len(dead) == 1 and b"HANDLER_TIMEOUT" in dead[0][1][b"reason"]
        publish({"sleep": 120, "n": 2})
        time.sleep(0.5)  # it hangs now
        stopping = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(15) == 0
        print(f"SIGTERM while a sync handler hangs: exit 0 after {time.monotonic() - stopping:.1f} s "
              "(SHUTDOWN_TIMEOUT 2 s)")
        assert time.monotonic() - stopping <= 2 + 3
        pending = redis_conn.xpending(stream, redis_conn.xinfo_groups(stream)[0]["name"])["pending"]
        assert pending == 1  # the hung event waits for the next start
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
