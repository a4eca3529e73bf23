"""Attacks 6, 8 and 12: NaN in events, origins of another port or scheme, invalidation payloads across tenants."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.test import override_settings

from supergraph_messaging import redis_publish
from supergraph_messaging.realtime.hub import get_hub
from tests.conftest import manage, wait_for
from tests.support.asgi import application

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_nan_in_an_event_fails_the_publish_not_the_request(redis_conn: Any, caplog: Any) -> None:
    from django.db import transaction

    from supergraph_messaging.delivery.pipelined import counters
    from supergraph_messaging.events import flush_events
    from supergraph_messaging.events.publishing import publish_on_commit

    failed = counters["failed"]
    for background in (True, False):
        with override_settings(SUPERGRAPH_MESSAGING={"PUBLISH_IN_BACKGROUND": background}), transaction.atomic():
            publish_on_commit("nan.created", {"temperature": float("nan")})  # the commit raises nothing
        flush_events()
    assert counters["failed"] - failed == 2
    assert "NaN and Infinity have no JSON form" in caplog.text


async def test_a_foreign_nan_never_reaches_a_browser(redis_conn: Any) -> None:
    comm = WebsocketCommunicator(application, "/subscribe", headers=[(b"origin", b"http://testserver")])
    assert (await comm.connect())[0]
    await comm.send_json_to({"type": "connection_init", "payload": {}})
    await comm.receive_json_from()
    await comm.send_json_to({"id": "1", "type": "subscribe", "payload": {"entity": "CameraEvents"}})
    assert (await comm.receive_json_from())["type"] == "subscribed"
    redis_conn.publish("camera.events", b'{"camera_id": NaN}')  # another stack's publisher
    redis_conn.publish("camera.events", b'{"camera_id": 1}')
    frame = await comm.receive_output(timeout=3)
    json.loads(frame["text"], parse_constant=lambda c: pytest.fail(f"{c} reached the client"))
    assert json.loads(frame["text"])["payload"]["data"] == {"camera_id": 1}
    await comm.disconnect()
    await get_hub().close()


@pytest.mark.parametrize(("origin", "allowed"), [
    ("http://localhost:8000", True), ("http://localhost:1", False), ("https://localhost:8000", False),
])
async def test_only_exact_origins_connect(redis_conn: Any, origin: str, allowed: bool) -> None:
    with override_settings(SUPERGRAPH_MESSAGING={"WS_ALLOWED_ORIGINS": ["http://localhost:8000"]}):
        comm = WebsocketCommunicator(application, "/subscribe", headers=[(b"origin", origin.encode())])
        assert (await comm.connect())[0] is allowed
        await comm.disconnect()


@pytest.fixture
def worker(redis_conn: Any) -> Iterator[Any]:
    proc = manage("messaging_listen")
    assert proc.stdout is not None
    proc.stdout.readline()
    wait_for(lambda: redis_conn.pubsub_numsub("tenant.user.changed")[0][1] == 1, timeout=10)
    yield proc
    proc.terminate()
    proc.wait(10)


ATTACKS: list[tuple[dict[str, Any], set[str]]] = [
    # (payload, the keys it must delete); every other key must survive.
    ({"user_id": 5}, set()),  # tenant missing: this template says invalidate_on_missing="skip"
    ({"tenant_id": None, "user_id": 5}, {"tenant:None:user:5"}),
    ({"tenant_id": "str", "user_id": 5}, set()),
    ({"tenant_id": [], "user_id": 5}, set()),
    ({"tenant_id": {}, "user_id": 5}, set()),
    ({"tenant_id": 1, "user_id": None}, set()),
    ({"tenant_id": 2, "user_id": 5, "_meta": {"previous": {"tenant_id": None}}},
     {"tenant:2:user:5", "tenant:None:user:5"}),
    ({"tenant_id": 1.0, "user_id": 5}, {"tenant:1:user:5"}),
    ({"tenant_id": 1, "user_id": True}, {"tenant:1:user:True"}),
]


def test_invalidation_payloads_cross_no_tenant_and_leave_nothing_stale(redis_conn: Any, worker: Any) -> None:
    keys = [f"tenant:{t}:user:{u}" for t in (1, 2, 3, "None") for u in (5, 6, "True")]
    cross, stale = 0, 0
    for payload, doomed in ATTACKS:
        redis_conn.mset({k: b"1" for k in keys})
        redis_publish("tenant.user.changed", payload)
        redis_publish("tenant.user.changed", {"tenant_id": 9, "user_id": 9})  # a marker: the one before is done
        redis_conn.set("tenant:9:user:9", b"1")
        deadline = time.monotonic() + 3
        while redis_conn.exists("tenant:9:user:9") and time.monotonic() < deadline:
            time.sleep(0.01)
        gone = {k for k in keys if not redis_conn.exists(k)}
        cross += len(gone - doomed)
        stale += len(doomed - gone)
    print(f"\n{len(ATTACKS)} hostile invalidation payloads: {cross} cross-tenant deletions, {stale} stale keys")
    assert cross == 0 and stale == 0
