"""N WebSocket clients that live through a server restart, counting every event (bench_storm.py).

    storm_client.py URL ORIGIN N [CONNECTIONS_PER_SECOND]

Each client subscribes to ``CameraEvents`` and keeps the position (offset,
epoch) of the last event it got. When its connection ends it reconnects the
way client.js does (full jitter: a uniform wait up to 250 ms x 2^attempt,
capped at 10 s) and subscribes again with ``since``. Events carry a ``seq``
from the publisher, so each client counts what it missed (a seq skipped)
and what it got twice (a seq again). Prints ``READY`` once all are
subscribed, ``RESUBSCRIBED <time>`` once all are again after a restart, and
on the ``mark`` event one JSON line of counts and latencies.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from typing import Any
from urllib.parse import urlsplit

from fanout_client import Connection

MIN_DELAY, MAX_DELAY = 0.25, 10.0


def percentile(values: list[float], q: float) -> float | None:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))] if values else None


class Storm:
    """The process's clients and what they counted."""

    def __init__(self, url: str, origin: str, n: int) -> None:
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        self.host, self.port, self.netloc, self.path, self.origin = (
            parts.hostname, parts.port, parts.netloc, parts.path, origin)
        self.n = n
        self.subscribed = 0  # clients subscribed on their current connection
        self.ready = asyncio.Event()
        self.restarted = False
        self.resubscribed: list[float] = []
        self.missed = self.duplicated = self.unrecovered = self.gaps = self.refused = self.retries = 0
        self.latency: dict[str, list[float]] = {"before": [], "after": []}
        self.marked = 0


class Client:
    """One logical client: its connections come and go, its position and counts stay."""

    def __init__(self, storm: Storm) -> None:
        self.storm = storm
        self.positions: dict[str, dict[str, Any]] = {}
        self.next_seq = 0
        self.attempt = 0
        self.lost_at: float | None = None
        self.subscribed = False  # on the current connection
        self.done = False

    def connect(self) -> None:
        loop = asyncio.get_running_loop()
        task = loop.create_task(loop.create_connection(
            lambda: StormConnection(self), self.storm.host, self.storm.port))
        task.add_done_callback(self._connected)

    def _connected(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled() or task.exception() is not None:
            self.retry()

    def retry(self) -> None:
        if self.done:
            return
        delay = random.uniform(0, min(MAX_DELAY, MIN_DELAY * 2 ** self.attempt))
        self.attempt += 1
        self.storm.retries += 1
        asyncio.get_running_loop().call_later(delay, self.connect)

    def on_message(self, conn: StormConnection, message: dict[str, Any]) -> None:
        kind, payload = message["type"], message.get("payload") or {}
        storm = self.storm
        if kind == "next":
            self.positions[payload["channel"]] = {"offset": payload["offset"], "epoch": payload["epoch"]}
            data = payload["data"]
            if "mark" in data:
                self.done = True
                storm.marked += 1
                if storm.marked == storm.n:
                    print(json.dumps(self.report()), flush=True)
                return
            seq = data["seq"]
            if seq < self.next_seq:
                storm.duplicated += 1
                return
            storm.missed += seq - self.next_seq
            self.next_seq = seq + 1
            if data.get("phase") in storm.latency:
                storm.latency[data["phase"]].append(time.time() - data["t"])
        elif kind == "ping":
            conn.send(json.dumps({"type": "pong", "payload": message.get("payload")}))
        elif kind == "connection_ack":
            subscribe: dict[str, Any] = {"entity": "CameraEvents"}
            if self.positions:
                subscribe["since"] = self.positions
            conn.send(json.dumps({"id": "1", "type": "subscribe", "payload": subscribe}))
        elif kind == "subscribed":
            self.attempt = 0
            if self.lost_at is None:
                self.positions = dict(payload.get("positions") or {})
            elif not payload.get("recovered"):
                storm.unrecovered += 1
            self.subscribed = True
            storm.subscribed += 1
            if self.lost_at is not None:
                self.lost_at = None
                storm.resubscribed.append(time.time())
            if storm.subscribed == storm.n:
                if storm.restarted:
                    print(f"RESUBSCRIBED {max(storm.resubscribed):.3f}", flush=True)
                else:
                    storm.ready.set()
        elif kind == "gap":
            storm.gaps += 1
        elif kind == "error":
            storm.refused += 1
            conn.close()

    def on_lost(self) -> None:
        if self.done:
            return
        storm = self.storm
        if self.lost_at is None:
            self.lost_at = time.time()
        storm.restarted = True
        if self.subscribed:
            self.subscribed = False
            storm.subscribed -= 1
        self.retry()

    def report(self) -> dict[str, Any]:
        storm = self.storm
        return {"clients": storm.n, "resubscribed": len(storm.resubscribed),
                "first_resubscribed": min(storm.resubscribed, default=None),
                "last_resubscribed": max(storm.resubscribed, default=None),
                "missed": storm.missed, "duplicated": storm.duplicated, "unrecovered": storm.unrecovered,
                "gaps": storm.gaps, "refused": storm.refused, "retries": storm.retries,
                **{f"p{q}_{phase}": percentile(values, q / 100) for phase, values in storm.latency.items()
                   for q in (50, 99)}}


class StormConnection(Connection):
    def __init__(self, client: Client) -> None:
        storm = client.storm
        super().__init__(None, storm.netloc, storm.path, storm.origin)  # type: ignore[arg-type]
        self.client = client
        self.live = False

    def on_text(self, payload: bytes) -> None:
        self.live = True
        self.client.on_message(self, json.loads(payload))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.live:
            self.client.on_lost()
        else:
            self.client.retry()  # refused before the first frame (the server was starting)


async def main() -> None:
    url, origin, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    per_second = float(sys.argv[4]) if len(sys.argv) > 4 else 500.0
    storm = Storm(url, origin, n)
    for i in range(n):
        Client(storm).connect()
        if i % 25 == 24:
            await asyncio.sleep(25 / per_second)
    await asyncio.wait_for(storm.ready.wait(), 300)
    print("READY", flush=True)
    while True:  # the parent kills us when it is done
        await asyncio.sleep(2)
        print(f"status: subscribed {storm.subscribed}/{storm.n}, resubscribed {len(storm.resubscribed)}, "
              f"missed {storm.missed}, refused {storm.refused}, retries {storm.retries}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    asyncio.run(main())
