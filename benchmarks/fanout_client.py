"""N WebSocket clients in one process; prints per-step delivery counts and latencies as JSON."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import defaultdict

import websockets

marks: dict = defaultdict(int)


async def client(url: str, origin: str, stats: dict, ready: asyncio.Event, counter: list[int], n: int,
                 done: asyncio.Event) -> None:
    async with websockets.connect(url, origin=origin, max_queue=None, ping_interval=None) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        await ws.recv()
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"entity": "CameraEvents"}}))
        await ws.recv()
        counter[0] += 1
        if counter[0] == n:
            ready.set()
        async for raw in ws:
            message = json.loads(raw)
            kind = message["type"]
            if kind == "ping":
                await ws.send(json.dumps({"type": "pong", "payload": message.get("payload")}))
                continue
            if kind != "next":
                continue
            data = message["payload"]["data"]
            if "mark" in data:
                marks[data["mark"]] += 1
                if marks[data["mark"]] == n:
                    count, latencies = stats[data["mark"]]
                    latencies.sort()
                    print(json.dumps({"step": data["mark"], "count": count,
                                      "p50": latencies[len(latencies) // 2] if latencies else None,
                                      "p99": latencies[int(len(latencies) * 0.99)] if latencies else None}),
                          flush=True)
                continue
            step = stats[data["step"]]
            step[0] += 1
            step[1].append(time.time() - data["t"])
    counter[1] += 1
    if counter[1] == n:
        done.set()


async def main() -> None:
    url, origin, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    per_second = float(sys.argv[4]) if len(sys.argv) > 4 else 500.0
    stats: dict = defaultdict(lambda: [0, []])
    ready, done = asyncio.Event(), asyncio.Event()
    counter = [0, 0]
    tasks = []
    for i in range(n):
        tasks.append(asyncio.create_task(client(url, origin, stats, ready, counter, n, done)))
        if i % 25 == 24:  # a gentle ramp: the handshake must finish within daphne's connect timeout
            await asyncio.sleep(25 / per_second)
    await asyncio.wait_for(ready.wait(), 300)
    print("READY", flush=True)
    await done.wait()  # the parent kills us when it is done


if __name__ == "__main__":
    asyncio.run(main())
