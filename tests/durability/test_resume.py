"""A WebSocket client away while events arrive on a channel it never saw, against real daphne and relay.

daphne (durable delivery) serves the cameras' ViewSet, whose ``EventConfig`` publishes
``camera.created`` and ``camera.updated``; a relay moves the outbox to the streams. A WebSocket client
subscribes to ``CameraLifecycle`` (both channels), sees one update, and leaves. Meanwhile 10 cameras are
created and 10 updated through the API. It comes back with every position it holds (the ``subscribed``
reply's, moved on by each ``next``), as client.js does. The trial got 0/10 creates and
``recovered: true``; the promise: 10/10 creates and 10/10 updates, or ``recovered: false`` with a gap.
"""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from supergraph_messaging.delivery import streams
from tests.durability.harness import Database, Processes
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.slow


def _api(port: int, method: str, path: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                     method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _subscribe(ws: ClientConnection, since: dict[str, Any] | None = None) -> dict[str, Any]:
    ws.send(json.dumps({"type": "connection_init", "payload": {}}))
    assert json.loads(ws.recv(timeout=5))["type"] == "connection_ack"
    payload = {"entity": "CameraLifecycle", **({"since": since} if since else {})}
    ws.send(json.dumps({"id": "l", "type": "subscribe", "payload": payload}))
    (reply,) = _frames(ws, 1)
    assert reply["type"] == "subscribed", reply
    return reply


def _frames(ws: ClientConnection, count: int, timeout: float = 10) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while len(out) < count:
        frame = json.loads(ws.recv(timeout=timeout))
        if frame["type"] == "ping":
            ws.send(json.dumps({"type": "pong", "payload": frame.get("payload")}))
            continue
        out.append(frame)
    return out


def test_resume_fills_the_channel_the_client_never_saw() -> None:
    server = RedisServer()
    server.start()
    db = Database()
    procs = Processes(server, db, "durable")
    try:
        procs.start("relay")
        procs.start("web")
        port = procs.port
        url, origin = f"ws://127.0.0.1:{port}/subscribe", f"http://127.0.0.1:{port}"
        camera = _api(port, "POST", "/cameras/", {"mac_address": "resume-0"})
        conn = server.client()
        while not conn.xlen(streams.keys("camera.created")[0]):  # relayed before the client comes
            time.sleep(0.05)
        with connect(url, origin=origin) as ws:
            positions = _subscribe(ws)["payload"]["positions"]
            _api(port, "PATCH", f"/cameras/{camera['id']}/", {"name": "seen"})
            (seen,) = _frames(ws, 1)
            assert seen["payload"]["channel"] == "camera.updated", seen
            positions["camera.updated"] = {"offset": seen["payload"]["offset"], "epoch": seen["payload"]["epoch"]}
        created = [_api(port, "POST", "/cameras/", {"mac_address": f"resume-{n}"})["id"] for n in range(1, 11)]
        for pk in created:
            _api(port, "PATCH", f"/cameras/{pk}/", {"name": "away"})
        with connect(url, origin=origin) as ws:
            reply = _subscribe(ws, since=positions)
            got = _frames(ws, 20) if reply["payload"]["recovered"] else _frames(ws, 1)
        output = procs.output()
    finally:
        procs.stop_all()
        server.close()
        db.drop()
    if not reply["payload"]["recovered"]:
        assert got[0]["type"] == "gap", got
        pytest.fail(f"not recovered (a gap was sent, as promised), though no history was lost\n{output[-2000:]}")
    creates = sorted(f["payload"]["data"]["id"] for f in got if f["payload"]["channel"] == "camera.created")
    updates = sorted(f["payload"]["data"]["id"] for f in got if f["payload"]["channel"] == "camera.updated")
    print(f"\nresume after 10 creates on a channel never seen and 10 updates: {len(creates)}/10 creates, "
          f"{len(updates)}/10 updates, recovered: {reply['payload']['recovered']}")
    assert creates == sorted(created) and updates == sorted(created)
