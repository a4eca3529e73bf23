"""A durable service as processes: a messaging_listen worker and daphne, and a WebSocket client on it."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from tests.conftest import manage, wait_for
from tests.realtime.test_ws_e2e import AsgiServer


@contextmanager
def web_and_worker(redis_port: int, redis_conn: Any, **env: str) -> Iterator[tuple[AsgiServer, subprocess.Popen[str]]]:
    """A worker (its consumer groups made, its relay listening), then daphne, both with ``env``
    (``SGM_DELIVERY=durable`` added); both stopped after."""
    env = {"SGM_DELIVERY": "durable", **env}
    worker = manage("messaging_listen", SGM_TEST_REDIS_PORT=str(redis_port), **env)
    server = None
    try:
        assert worker.stdout is not None
        assert "Listening on" in worker.stdout.readline() and "consumer groups" in worker.stdout.readline()
        wait_for(lambda: redis_conn.pubsub_numsub("sgm:relay")[0][1] == 1, timeout=15)
        server = AsgiServer(redis_port, **env)
        yield server, worker
    finally:
        if server is not None:
            server.stop()
        worker.terminate()
        worker.wait(30)


@asynccontextmanager
async def subscribed(server: AsgiServer, entity: str) -> AsyncIterator[Any]:
    """A WebSocket client of ``server``, acknowledged and subscribed to ``entity`` (id "1")."""
    async with server.connect() as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"entity": entity}}))
        assert json.loads(await ws.recv())["type"] == "subscribed"
        yield ws
