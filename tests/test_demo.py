"""The demo end to end: `demo_project/run.py` (embedded Redis; access_control, events, notifications and the
gateway, each its own daphne, with a messaging_listen worker per service), walked over HTTP and WebSocket.

Every pattern crosses a process boundary: the cache-aside lookup falls back
over HTTP from events to access_control (events has no camera table), events
published by two services reach a WebSocket client through the gateway, and
a settings change made at access_control becomes a row in notifications'
own database.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
import websockets

from tests.conftest import ROOT
from tests.support.browser import browser_page, shot  # noqa: F401 - fixture
from tests.support.redis_server import free_port

pytestmark = pytest.mark.slow


SERVICES = ("gateway", "access_control", "events", "notifications")


class Demo:
    def __init__(self, tmp: str) -> None:
        self.ports = dict(zip(SERVICES, (free_port() for _ in SERVICES), strict=True))
        self.port = self.ports["gateway"]
        self.urls = {name: f"http://127.0.0.1:{port}" for name, port in self.ports.items()}
        env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DJANGO_SETTINGS_MODULE")}
        env.update(DEMO_PORTS=",".join(map(str, self.ports.values())), DEMO_DATA_DIR=tmp, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, "demo_project/run.py"], cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.proc.stdout is not None
        self.output: list[str] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            self.output.append(line)
            if "Embedded Redis:" in line:
                self.redis_url = re.search(r"redis://\S+", line).group(0)  # type: ignore[union-attr]
            if "Ctrl-C stops everything" in line:
                break
            if not line and self.proc.poll() is not None:
                raise RuntimeError("demo exited:\n" + "".join(self.output))
        self.base = f"http://127.0.0.1:{self.port}"
        for _ in range(200):
            try:
                httpx.get(self.base + "/__schema", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        self.redis = redis.Redis.from_url(self.redis_url)
        # The three workers are up once each subscribed (durable delivery: to the relays' nudges).
        for _ in range(400):
            if self.redis.pubsub_numsub("sgm:relay")[0][1] >= 3:
                break
            time.sleep(0.05)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    d = Demo(str(tmp_path_factory.mktemp("demo")))
    yield d
    d.stop()
    assert d.proc.returncode == 0


async def ws_subscribe(demo: Demo, entity: str, filters: dict[str, Any]) -> Any:
    ws = await websockets.connect(f"ws://127.0.0.1:{demo.port}/subscribe", origin=demo.base)
    await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
    assert json.loads(await ws.recv())["type"] == "connection_ack"
    await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"entity": entity, "filters": filters}}))
    assert json.loads(await ws.recv())["type"] == "subscribed"
    return ws


async def next_event(ws: Any, timeout: float = 5) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            message = json.loads(await ws.recv())
            if message["type"] == "ping":
                await ws.send(json.dumps({"type": "pong", "payload": message.get("payload")}))
            elif message["type"] == "next":
                return message["payload"]  # type: ignore[no-any-return]


async def test_three_patterns_across_processes(demo: Demo) -> None:
    schema = httpx.get(demo.base + "/__schema").json()
    owners = {s["entity"]: s.get("service") for s in schema["subscriptions"]}
    assert owners == {"CameraChanges": "access_control", "CameraEvents": "events"}  # the gateway has none
    access_control = httpx.AsyncClient(base_url=demo.urls["access_control"], timeout=10)
    events = httpx.AsyncClient(base_url=demo.urls["events"], timeout=10)
    notifications = httpx.AsyncClient(base_url=demo.urls["notifications"], timeout=10)
    # access_control's changes, through the gateway: creating a camera publishes camera.created.
    changes = await ws_subscribe(demo, "CameraChanges", {})
    r = await access_control.post("/api/cameras/", json={"mac_address": "DE:MO:00:00:00:01", "name": "Test",
                                                         "complex_id": 42})
    assert r.status_code == 201, r.text
    camera = r.json()
    created = await next_event(changes)
    assert created["channel"] == "camera.created" and created["data"]["mac_address"] == "DE:MO:00:00:00:01"

    # Pattern 1, the fallback: with the camera not cached, the events service (no camera table of its own)
    # looks it up over HTTP at access_control, and fills the cache for the next reader.
    key = "camera:mac:DE:MO:00:00:00:01"
    demo.redis.delete(key)
    # Pattern 2: the raw event, processed by events, reaches the gateway's matching subscription only.
    matching = await ws_subscribe(demo, "CameraEvents", {"camera_id__in": [camera["id"]]})
    other = await ws_subscribe(demo, "CameraEvents", {"complex_id": 999})
    r = await events.post("/api/raw-events/", json={"mac_address": "DE:MO:00:00:00:01", "event_type": "motion"})
    assert r.status_code == 202, r.text
    assert r.json()["published"]["complex_id"] == 42  # access_control's row, fetched over HTTP
    event = await next_event(matching)
    assert event["data"]["camera_id"] == camera["id"] and event["data"]["event_type"] == "motion"
    with pytest.raises(TimeoutError):
        await next_event(other, timeout=0.5)
    assert json.loads(demo.redis.get(key))["name"] == "Test"  # filled by the fallback

    # Pattern 1, invalidation: an update at access_control reaches the events service's cache.
    r = await access_control.patch(f"/api/cameras/{camera['id']}/", json={"name": "Renamed", "complex_id": 43})
    assert r.status_code == 200
    updated = await next_event(changes)  # camera.updated went out
    # access_control's CacheSync wrote the new row for this change; the events service's invalidate_on
    # for the same change leaves it (it used to delete it: one HTTP fallback per update). Sampled for 1 s
    # after the event: the key is never missing, so no reader falls back.
    missing = 0
    for _ in range(200):
        missing += not demo.redis.exists(key)
        await asyncio.sleep(0.005)
    print(f"\nafter an update: the cached camera was missing in {missing} of 200 samples (fallbacks needed;"
          " access_control's CacheSync and events' invalidate_on in separate processes)")
    assert missing == 0
    assert demo.redis.get(key + "~ver").decode() == updated["data"]["_meta"]["event_id"]
    r = await events.post("/api/raw-events/", json={"mac_address": "DE:MO:00:00:00:01", "event_type": "tamper"})
    assert r.json()["published"]["complex_id"] == 43  # new data, long before the TTL
    assert json.loads(demo.redis.get(key))["name"] == "Renamed"

    # Pattern 3: settings changed at access_control become a row in notifications' own database.
    r = await access_control.patch(f"/api/cameras/{camera['id']}/settings/", json={"settings": {"fps": 10}})
    assert r.status_code == 200, r.text
    for _ in range(100):
        notes = (await notifications.get("/api/notifications/")).json()
        if notes:
            break
        await asyncio.sleep(0.05)
    assert notes[0]["message"] == "Camera DE:MO:00:00:00:01 settings updated"
    assert notes[0]["payload"]["settings"] == {"fps": 10}
    for ws in (changes, matching, other):
        await ws.close()
    for client in (access_control, events, notifications):
        await client.aclose()


@pytest.mark.browser
def test_live_page_in_a_browser(demo: Demo, browser_page: Any) -> None:  # noqa: F811
    page = browser_page
    page.goto(demo.base + "/")
    page.wait_for_selector("#camera option", state="attached")
    page.fill("#complex-filter", "7")
    page.click("#subscribe")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('Subscribed')")
    page.select_option("#camera", "AA:BB:CC:00:00:01")
    page.fill("#event-type", "motion_detected")
    page.click("#post-event")
    page.wait_for_selector("#events li")
    assert "motion_detected" in page.inner_text("#events li")
    page.select_option("#camera", "AA:BB:CC:00:00:02")
    page.fill("#event-type", "line_crossing")
    page.click("#post-event")
    page.wait_for_function("document.querySelectorAll('#events li').length >= 2")
    page.wait_for_timeout(2500)  # let the stats panel refresh
    shot(page, "demo-live")
