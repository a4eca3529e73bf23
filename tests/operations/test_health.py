"""/__health/live and /__health/ready against a real Redis that stops and starts, the outbox and a gateway."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client, override_settings
from django.utils import timezone

from supergraph_messaging.models import OutboxEvent
from tests.support.redis_server import RedisServer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.topology("single")]


def test_live_answers_while_redis_is_down_and_ready_follows_redis_within_two_seconds(own_redis: RedisServer) -> None:
    client = Client()
    with override_settings(SUPERGRAPH_MESSAGING={"REDIS_URL": own_redis.url, "SOCKET_TIMEOUT": 0.5}):
        ready = client.get("/__health/ready")
        assert ready.status_code == 200 and ready.json()["checks"]["redis"]["status"] == "ok"
        assert ready["Cache-Control"].startswith("max-age=0")
        own_redis.stop()
        assert client.get("/__health/live").json() == {"status": "ok"}  # a Redis outage is not the process's
        down = client.get("/__health/ready")
        assert down.status_code == 503
        assert down.json() == {"status": "fail", "checks": {"redis": {"status": "fail", "error": "ConnectionError"}}}
        assert str(own_redis.port) not in down.content.decode()  # no host, no port, no exception text
        own_redis.start()
        back = time.monotonic()
        while client.get("/__health/ready").status_code != 200:
            assert time.monotonic() - back < 2.0, "not ready within 2 s of Redis being back"
            time.sleep(0.05)
        print(f"\n/__health/ready: 503 while Redis was down, 200 {time.monotonic() - back:.2f} s after it was back")
    assert client.post("/__health/ready").status_code == 405


def test_ready_fails_while_the_oldest_unrelayed_outbox_row_is_too_old(redis_conn: Any) -> None:
    row = OutboxEvent.objects.create(channel="orders.paid", event_id=uuid.uuid4(), payload="{}")
    OutboxEvent.objects.filter(pk=row.pk).update(created_at=timezone.now() - timedelta(seconds=90))
    with override_settings(SUPERGRAPH_MESSAGING={"DELIVERY": "durable", "SERVICE_NAME": "t"}):
        stuck = Client().get("/__health/ready")
        assert stuck.status_code == 503
        outbox = stuck.json()["checks"]["outbox"]
        assert outbox["status"] == "fail" and outbox["pending"] == 1 and outbox["oldest_seconds"] >= 90
        with override_settings(SUPERGRAPH_MESSAGING={"DELIVERY": "durable", "SERVICE_NAME": "t",
                                                     "HEALTH_OUTBOX_MAX_AGE": 120}):
            assert Client().get("/__health/ready").status_code == 200


def test_a_gateway_is_ready_only_with_a_service_that_answers(redis_conn: Any) -> None:
    with override_settings(SUPERGRAPH_MESSAGING={"GATEWAY_SERVICES": {"nowhere": "http://127.0.0.1:9"},
                                                 "GATEWAY_TIMEOUT": 0.2}):
        answer = Client().get("/__health/ready")
    assert answer.status_code == 503
    assert answer.json()["checks"]["gateway"] == {"status": "fail", "services": 1, "available": []}


def probe(port: int, path: str, timeout: float = 2.0) -> tuple[int, dict[str, Any]]:
    import json
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_workers_probes_are_answered_by_its_event_loop(redis_conn: Any) -> None:
    import signal
    import socket

    from tests.conftest import manage, wait_for
    from tests.support.redis_server import free_port

    port = free_port()
    worker = manage("messaging_listen", "--health-port", str(port), "--health-host", "127.0.0.1")
    try:
        assert worker.stdout is not None and "Listening on" in worker.stdout.readline()
        wait_for(lambda: probe(port, "/__health/ready")[0] == 200 if _listening(port) else False, timeout=15)
        status, body = probe(port, "/__health/ready")
        assert status == 200 and body["checks"]["pubsub"] == {"status": "ok"}
        assert body["checks"]["redis"]["status"] == "ok"
        assert probe(port, "/__health/live") == (200, {"status": "ok"})
        assert probe(port, "/elsewhere")[0] == 404
        worker.send_signal(signal.SIGSTOP)  # a stuck worker: its loop answers nothing, so liveness fails
        try:
            with pytest.raises((TimeoutError, socket.timeout, OSError)):
                probe(port, "/__health/live", timeout=1.0)
        finally:
            worker.send_signal(signal.SIGCONT)
        assert probe(port, "/__health/live") == (200, {"status": "ok"})
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)


def _listening(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True
