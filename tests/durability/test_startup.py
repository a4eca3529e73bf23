"""Start-up order does not matter: ``manage.py messaging_listen`` started 8 s before its Redis waits for it
(one log line per state change, no traceback) and then handles what is published, in both delivery modes."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.test import override_settings

from supergraph_messaging import redis_publish
from tests.conftest import manage, pointed_at
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.slow


@pytest.fixture
def late_redis() -> Iterator[RedisServer]:
    server = RedisServer()  # its port is chosen; nothing listens there yet
    yield server
    server.close()


@pytest.mark.parametrize("mode", ["pubsub", "durable"])
def test_a_worker_started_before_redis_handles_events_once_redis_is_up(late_redis: RedisServer, mode: str) -> None:
    delivery = mode
    with pointed_at(late_redis.url):
        worker = manage("messaging_listen", SGM_DELIVERY=delivery)
        try:
            time.sleep(8)
            assert worker.poll() is None, f"the worker exited while Redis was down:\n{worker.communicate()[0]}"
            late_redis.start()
            conn = late_redis.client()
            ready = "sgm:relay" if delivery == "durable" else "camera.updated"
            deadline = time.monotonic() + 15
            while conn.pubsub_numsub(ready)[0][1] < 1:
                assert time.monotonic() < deadline, "the worker did not subscribe after Redis came up"
                time.sleep(0.05)
            conn.set("camera:mac:LATE", "stale")
            with override_settings(SUPERGRAPH_MESSAGING={**settings.SUPERGRAPH_MESSAGING, "DELIVERY": delivery}):
                redis_publish("camera.updated", {"mac_address": "LATE"})
            deadline = time.monotonic() + 10
            while conn.exists("camera:mac:LATE"):
                assert time.monotonic() < deadline, "the invalidation published after Redis came up was not handled"
                time.sleep(0.05)
        finally:
            worker.terminate()
            try:
                output = worker.communicate(timeout=15)[0]
            except subprocess.TimeoutExpired:
                worker.kill()
                output = worker.communicate()[0]
    assert "Traceback" not in output, output
    waiting = [line for line in output.splitlines() if "unreachable" in line or "unavailable" in line]
    assert len(waiting) <= 4, "one line per state change, not one per retry:\n" + "\n".join(waiting)
    assert worker.returncode == 0, output

