from __future__ import annotations

import signal
import time
from typing import Any

import pytest

from supergraph_messaging import redis_publish
from tests.conftest import manage, wait_for


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_worker_handles_message_and_exits_cleanly(redis_conn: Any, sig: int) -> None:
    proc = manage("messaging_listen")
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "testapp.ping" in line, line
        wait_for(lambda: redis_conn.pubsub_numsub("testapp.ping")[0][1] == 1, timeout=10)
        assert redis_publish("testapp.ping", {"n": 7}) == 1
        wait_for(lambda: redis_conn.lrange("testapp:pings", 0, -1) == [b"7"])
        started = time.monotonic()
        proc.send_signal(sig)
        assert proc.wait(5) == 0
        assert time.monotonic() - started < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
