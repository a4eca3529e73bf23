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
from tests.operations.test_metrics import SERIES
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
        self.started = time.monotonic()
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


async def create_camera(access_control: httpx.AsyncClient, mac: str, name: str, complex_id: int) -> dict[str, Any]:
    r = await access_control.post("/api/cameras/", json={"mac_address": mac, "name": name, "complex_id": complex_id})
    assert r.status_code == 201, r.text
    camera: dict[str, Any] = r.json()
    return camera


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
    camera = await create_camera(access_control, "DE:MO:00:00:00:01", "Test", 42)
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


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
P = "supergraph_messaging_"


def scrape(demo: Demo, service: str) -> Samples:
    """The service's /metrics: its daphne and its messaging_listen, summed (one PROMETHEUS_MULTIPROC_DIR each)."""
    from prometheus_client.parser import text_string_to_metric_families

    answer = httpx.get(demo.urls[service] + "/metrics", timeout=10)
    assert answer.status_code == 200, answer.text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(answer.text) for s in family.samples}


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == P + name and dict(ls).items() >= labels.items())


async def test_metrics_of_the_running_demo_count_10_writes_and_10_deliveries_exactly(demo: Demo) -> None:
    """Issue 29's acceptance on the demo itself: 10 API writes at access_control, 10 WebSocket deliveries at
    the gateway, each counted exactly once across the service's daphne and worker."""
    access_control = httpx.AsyncClient(base_url=demo.urls["access_control"], timeout=10)
    changes = await ws_subscribe(demo, "CameraChanges", {})
    camera = await create_camera(access_control, "ME:TR:IC:00:00:01", "Metrics", 77)
    assert (await next_event(changes))["channel"] == "camera.created"
    await asyncio.sleep(2.5)  # each process moves its counts into the shared files once a second
    before = {service: scrape(demo, service) for service in SERVICES}
    for n in range(10):
        r = await access_control.patch(f"/api/cameras/{camera['id']}/", json={"name": f"Metrics {n}"})
        assert r.status_code == 200, r.text
    got = [await next_event(changes) for _ in range(10)]
    assert [e["channel"] for e in got] == ["camera.updated"] * 10
    demo.redis.delete("camera:mac:ME:TR:IC:00:00:01")  # the events service's lookup: a miss and fill, then a hit
    async with httpx.AsyncClient(base_url=demo.urls["events"], timeout=10) as events:
        for _ in range(2):
            r = await events.post("/api/raw-events/", json={"mac_address": "ME:TR:IC:00:00:01", "event_type": "x"})
            assert r.status_code == 202, r.text
    await asyncio.sleep(2.5)
    after = {service: scrape(demo, service) for service in SERVICES}

    def delta(service: str, name: str, **labels: str) -> float:
        return total(after[service], name, **labels) - total(before[service], name, **labels)

    assert delta("access_control", "outbox_enqueued_total", channel="camera.updated") == 10  # its daphne
    assert delta("access_control", "events_published_total", channel="camera.updated") == 10  # its worker's relay
    assert delta("access_control", "outbox_relayed_total") == 10
    assert total(after["access_control"], "outbox_pending") == 0
    # The events service's invalidate_on, in its own worker, once per change:
    assert delta("events", "handler_duration_seconds_count", channel="camera.updated") == 10
    assert total(after["gateway"], "websocket_connections") == 1  # this client only: every delivery is its
    assert delta("gateway", "websocket_deliveries_total") == 10
    assert total(after["gateway"], "websocket_subscriptions", entity="CameraChanges") == 1
    assert {s: total(after["gateway"], "gateway_service_up", service=s)
            for s in ("access_control", "events", "notifications")} == {
        "access_control": 1, "events": 1, "notifications": 1}
    # Every series is listed, each by the service that does the thing (the WebSockets are the gateway's).
    listed = {name for samples in after.values() for name, _labels in samples}
    assert [s for s in SERIES if P + s not in listed] == []
    print("\n/metrics of the running demo after 10 writes and 10 deliveries: outbox_enqueued +10 and "
          "events_published +10 (access_control's daphne and worker), invalidate_on handler +10 (events' "
          "worker), websocket_deliveries +10 (the gateway); every series listed")
    await changes.close()
    await access_control.aclose()


def drawn_charts(page: Any) -> dict[str, int]:
    """The health page's charts: label -> points drawn."""
    drawn = page.evaluate("""() => [...document.querySelectorAll('.health-chart')].map(c => ({
        label: c.querySelector('.label').textContent,
        points: [...c.querySelectorAll('polyline')].map(p => p.getAttribute('points').split(' ').length)
                  .reduce((a, b) => a + b, 0) + c.querySelectorAll('circle').length}))""")
    return {d["label"]: d["points"] for d in drawn}


def answer_pings(ws: Any) -> None:
    """What has arrived on a sync WebSocket client, read; the server's pings answered."""
    while True:
        try:
            message = json.loads(ws.recv(timeout=0))
        except TimeoutError:
            return
        if message["type"] == "ping":
            ws.send(json.dumps({"type": "pong", "payload": message.get("payload")}))


@pytest.mark.browser
def test_the_demos_health_page_after_a_minute(demo: Demo, browser_page: Any) -> None:  # noqa: F811
    """The admin's Messaging health page (access_control's admin) once the demo has run a minute with
    traffic, sampled every HEALTH_SAMPLE_INTERVAL (the default 10 s): non-empty charts for its own service
    and, from the same Redis, for the events service (the cache) and the gateway (the WebSockets)."""
    from websockets.sync.client import connect

    with httpx.Client(timeout=10) as http, connect(f"ws://127.0.0.1:{demo.port}/subscribe", origin=demo.base) as ws:
        ws.send(json.dumps({"type": "connection_init", "payload": {}}))  # a client open through the minute
        assert json.loads(ws.recv(timeout=5))["type"] == "connection_ack"
        r = http.post(demo.urls["access_control"] + "/api/cameras/",
                      json={"mac_address": "HE:AL:TH:00:00:01", "name": "Health", "complex_id": 7})
        assert r.status_code == 201, r.text
        camera = r.json()
        n = 0
        while time.monotonic() - demo.started < 65:  # traffic until the demo has run a minute
            http.patch(f"{demo.urls['access_control']}/api/cameras/{camera['id']}/", json={"name": f"Health {n}"})
            http.post(demo.urls["events"] + "/api/raw-events/",
                      json={"mac_address": "HE:AL:TH:00:00:01", "event_type": "motion"})
            n += 1
            time.sleep(0.5)
            answer_pings(ws)  # or the server closes it as a reader that stopped reading (4008)
        page = browser_page
        health = "/admin/supergraph_messaging/cachekey/health/"
        page.goto(f"{demo.urls['access_control']}/admin/login/?next={health}")
        page.fill("#id_username", "admin")
        page.fill("#id_password", "admin")
        page.click("input[type=submit]")
        page.wait_for_selector("#health-summary")
        assert page.inner_text("#health-services").split() == [
            "Service:", "access_control", "·", "events", "·", "gateway", "·", "notifications"]
        shot(page, "demo-admin-health")
        charts = drawn_charts(page)
        assert charts.get("camera.updated", 0) >= 3, charts  # the event rate, a point per sample after the first
        page.goto(f"{demo.urls['access_control']}{health}?service=events")
        page.wait_for_selector("#health-summary")
        charts = drawn_charts(page)
        assert charts.get("camera:mac:{mac_address}", 0) >= 3, charts  # the events service's hit ratio
        page.goto(f"{demo.urls['access_control']}{health}?service=gateway")
        page.wait_for_selector("#health-summary")
        shot(page, "demo-admin-health-gateway")
        charts = drawn_charts(page)
        assert charts.get("open", 0) >= 3, charts  # the WebSocket open all along
        assert page.inner_text(".health-chart:has(.label:text-is('open')) .figures").startswith("now 1.00")
