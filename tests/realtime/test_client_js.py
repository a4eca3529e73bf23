"""client.js in headless Chromium against daphne: subscribe, receive, pings, server restart, unsubscribe."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.realtime.test_ws_e2e import Daphne
from tests.support.browser import browser_page  # noqa: F401 - fixture
from tests.support.redis_server import RedisServer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
STATIC = Path(__file__).resolve().parent.parent.parent / "supergraph_messaging" / "static"
CLIENT_JS = STATIC / "supergraph_messaging" / "client.js"
SETUP = """
window.events = []; window.statuses = []; window.gaps = [];
window.client = new SubscriptionClient("%s", {minDelay: 100, maxDelay: 400,
    onStatus: (s, c) => window.statuses.push(typeof c === "number" ? s + ":" + c : s)});
window.stop = window.client.subscribe("CameraEvents", {filters: {camera_id: 1}}, (data) => window.events.push(data),
                                      {onGap: (reason) => window.gaps.push(reason)});
"""

LIFECYCLE = """
window.lifecycle = [];
window.client.subscribe("CameraLifecycle", {}, (data) => window.lifecycle.push(data),
                        {onGap: (reason) => window.gaps.push("lifecycle:" + reason)});
"""


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_client_js_subscribes_survives_a_restart_and_unsubscribes(
        browser_page: Any, redis_server: RedisServer) -> None:  # noqa: F811 - the fixture
    page = browser_page
    timings = {"SGM_WS_PING_INTERVAL": "0.3", "SGM_WS_PONG_TIMEOUT": "1"}  # a client that never pongs: closed in ~1 s
    server = Daphne(redis_server.port, **timings)
    conn = redis.Redis(port=redis_server.port)

    def subscribers() -> int:
        return int(conn.pubsub_numsub("camera.events")[0][1])

    def publish(camera_id: int, n: int) -> None:
        conn.publish("camera.events", json.dumps({"camera_id": camera_id, "n": n}))

    def seen() -> list[Any]:
        return [e["n"] for e in page.evaluate("window.events")]

    try:
        url = f"ws://127.0.0.1:{server.port}/subscribe"
        # A page of daphne's own origin (a page elsewhere may not open a loopback WebSocket: Chromium's
        # private network rules), with client.js and the set-up as one inline module.
        page.goto(f"http://127.0.0.1:{server.port}/__schema")
        page.add_script_tag(content=CLIENT_JS.read_text() + SETUP % url, type="module")
        wait_for(lambda: subscribers() >= 1, "the subscription")
        publish(2, 0)  # filtered out
        publish(1, 1)
        wait_for(lambda: seen() == [1], "the first event")

        time.sleep(2.5)  # several ping intervals past the pong timeout: answered pings keep it open
        assert not [s for s in page.evaluate("window.statuses") if s.startswith("disconnected")]
        publish(1, 2)
        wait_for(lambda: seen() == [1, 2], "an event after the pings")

        server.stop()
        wait_for(lambda: any(s.startswith("disconnected") for s in page.evaluate("window.statuses")),
                 "the client to notice")
        server = Daphne(redis_server.port, port=server.port, **timings)
        wait_for(lambda: page.evaluate("window.statuses").count("connected") == 2 and subscribers() >= 1,
                 "reconnect and resubscribe")
        publish(1, 3)
        wait_for(lambda: seen() == [1, 2, 3], "an event after the restart")
        assert page.evaluate("window.gaps") == []  # Pub/Sub delivery, and nothing was published meanwhile

        page.evaluate("window.stop()")
        wait_for(lambda: subscribers() == 0, "the server to drop the unsubscribed route")
        publish(1, 4)
        time.sleep(0.5)
        assert seen() == [1, 2, 3]
    finally:
        server.stop()


def test_client_js_resumes_what_it_missed_with_since_under_durable_delivery(
        browser_page: Any, redis_server: RedisServer) -> None:  # noqa: F811 - the fixture
    """Events published while the server was down arrive after the reconnect, once each, in order, no gap."""
    from django.conf import settings
    from django.test import override_settings

    from supergraph_messaging import redis_publish

    page = browser_page
    server = Daphne(redis_server.port, SGM_DELIVERY="durable")
    conn = redis.Redis(port=redis_server.port)

    def seen() -> list[Any]:
        return [e["n"] for e in page.evaluate("window.events")]

    try:
        with override_settings(SUPERGRAPH_MESSAGING={**settings.SUPERGRAPH_MESSAGING, "DELIVERY": "durable"}):
            def publish(camera_id: int, n: int) -> None:
                redis_publish("camera.events", {"camera_id": camera_id, "n": n})

            page.goto(f"http://127.0.0.1:{server.port}/__schema")
            page.add_script_tag(content=CLIENT_JS.read_text() + SETUP % f"ws://127.0.0.1:{server.port}/subscribe"
                                + LIFECYCLE, type="module")
            wait_for(lambda: int(conn.pubsub_numsub("camera.events")[0][1]) >= 1
                     and int(conn.pubsub_numsub("camera.created")[0][1]) >= 1, "the subscriptions")
            publish(1, 1)
            wait_for(lambda: seen() == [1], "the first event (its position is now known to the client)")
            server.stop()
            wait_for(lambda: any(s.startswith("disconnected") for s in page.evaluate("window.statuses")),
                     "the client to notice")
            for camera_id, n in [(1, 2), (2, 99), (1, 3)]:  # while no server runs
                publish(camera_id, n)
            for n in range(3):  # on a channel of CameraLifecycle the client has seen no event on
                redis_publish("camera.created", {"n": n})
            server = Daphne(redis_server.port, port=server.port, SGM_DELIVERY="durable")
            wait_for(lambda: seen() == [1, 2, 3], "the missed events, replayed after the reconnect")
            publish(1, 4)
            wait_for(lambda: seen() == [1, 2, 3, 4], "a live event after the replay")
            wait_for(lambda: [e["n"] for e in page.evaluate("window.lifecycle")] == [0, 1, 2],
                     "the events of the channel never seen, replayed from the subscribed reply's position")
            time.sleep(0.3)
            assert seen() == [1, 2, 3, 4]  # none twice
            assert page.evaluate("window.gaps") == []
    finally:
        server.stop()
        conn.close()
