"""Pub/Sub: RedisSubscriber against a minimal raw redis-py asyncio PubSub loop.

Same messages, same Redis, one run. A publisher process sends N messages
(each carrying its send time) in pipelined batches for throughput, then a
paced stream for latency. Both receivers decode JSON and call an async
handler, so the difference is what RedisSubscriber adds.

    .venv/bin/python benchmarks/bench_pubsub.py [--runs=3] [--n=50000]
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import sys
import time
from collections.abc import Awaitable, Callable

from _common import median, pct, runs_arg, setup_django, start_redis

N = next((int(a.split("=")[1]) for a in sys.argv[1:] if a.startswith("--n=")), 50_000)
PACED_RATE = 10_000  # messages/s for the latency phase
CHANNEL = "bench.pubsub"


def publisher(url: str, n: int, paced: bool) -> None:
    import redis

    conn = redis.Redis.from_url(url)
    pad = "x" * 100
    if not paced:
        for start in range(0, n, 200):
            pipe = conn.pipeline(transaction=False)
            for i in range(start, min(n, start + 200)):
                pipe.publish(CHANNEL, json.dumps({"n": i, "t": time.time(), "pad": pad}))
            pipe.execute()
        return
    interval = 1.0 / PACED_RATE
    begin = time.perf_counter()
    for i in range(n):
        target = begin + i * interval
        while time.perf_counter() < target:
            pass
        conn.publish(CHANNEL, json.dumps({"n": i, "t": time.time(), "pad": pad}))


Receiver = Callable[[str, int, Callable[[dict], Awaitable[None]]], Awaitable[None]]


async def run_ours(url: str, n: int, handler: Callable[[dict], Awaitable[None]], ready: asyncio.Event,
                   done: asyncio.Event) -> None:
    from supergraph_messaging import RedisSubscriber

    sub = RedisSubscriber(url=url)
    sub.on(CHANNEL)(handler)
    await sub.start()
    ready.set()
    await done.wait()
    await sub.stop()


async def run_raw(url: str, n: int, handler: Callable[[dict], Awaitable[None]], ready: asyncio.Event,
                  done: asyncio.Event) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(CHANNEL)
    while (await pubsub.get_message(timeout=1.0)) is None and not pubsub.subscribed:
        pass
    ready.set()

    async def loop() -> None:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None:
                await handler(json.loads(message["data"]))

    task = asyncio.create_task(loop())
    await done.wait()
    task.cancel()
    await pubsub.aclose()
    await client.aclose()


async def measure(kind: str, url: str, n: int, paced: bool) -> tuple[float, list[float]]:
    latencies: list[float] = []
    ready, done = asyncio.Event(), asyncio.Event()
    first: list[float] = []

    async def handler(data: dict) -> None:
        now = time.time()
        if not first:
            first.append(now)
        latencies.append(now - data["t"])
        if len(latencies) >= n:
            done.set()

    runner = run_ours if kind == "ours" else run_raw
    task = asyncio.create_task(runner(url, n, handler, ready, done))
    await ready.wait()
    proc = mp.get_context("spawn").Process(target=publisher, args=(url, n, paced))
    start = time.time()
    proc.start()
    await asyncio.wait_for(done.wait(), 120)
    elapsed = time.time() - start
    await task
    proc.join()
    return n / elapsed, latencies


def main() -> None:
    server = start_redis()
    setup_django(server.url)
    runs = runs_arg()
    results: dict[str, dict[str, list[float]]] = {
        k: {"tput": [], "p50": [], "p99": []} for k in ("ours", "raw")
    }
    try:
        for run in range(runs):
            for kind in ("raw", "ours") if run % 2 else ("ours", "raw"):
                tput, _ = asyncio.run(measure(kind, server.url, N, paced=False))
                _, lat = asyncio.run(measure(kind, server.url, N // 5, paced=True))
                results[kind]["tput"].append(tput)
                results[kind]["p50"].append(pct(lat, 0.50) * 1000)
                results[kind]["p99"].append(pct(lat, 0.99) * 1000)
                print(f"run {run + 1} {kind:4}: {tput:9.0f} msg/s   paced {PACED_RATE}/s: "
                      f"p50 {results[kind]['p50'][-1]:.3f} ms  p99 {results[kind]['p99'][-1]:.3f} ms",
                      flush=True)
    finally:
        server.close()
    o, r = results["ours"], results["raw"]
    print(f"\nmedian of {runs} runs, {N} messages (throughput), {N // 5} paced at {PACED_RATE}/s (latency)")
    print(f"  throughput  ours {median(o['tput']):9.0f} msg/s  raw {median(r['tput']):9.0f} msg/s  "
          f"ratio {median(o['tput']) / median(r['tput']):.2f}x  (goal >= 0.95)")
    print(f"  p50         ours {median(o['p50']):.3f} ms  raw {median(r['p50']):.3f} ms  "
          f"ratio {median(o['p50']) / median(r['p50']):.2f}x")
    print(f"  p99         ours {median(o['p99']):.3f} ms  raw {median(r['p99']):.3f} ms  "
          f"ratio {median(o['p99']) / median(r['p99']):.2f}x  (goal <= 1.5)")
    durable_publish_throughput(runs)


def durable_publish_throughput(runs: int, n: int = 20_000, batch: int = 1_000) -> None:
    """redis_publish(durable=True) (stream append + PUBLISH in one script) against a plain PUBLISH."""
    from supergraph_messaging import redis_publish
    from supergraph_messaging.redis.client import init_redis

    server = start_redis()
    init_redis(server.url)
    payload = {"n": 0, "pad": "x" * 100}
    rates: dict[bool, list[float]] = {True: [], False: []}
    try:
        for _ in range(runs):
            samples: dict[bool, list[float]] = {True: [], False: []}
            for i in range(n // batch):
                for durable in (True, False) if i % 2 else (False, True):
                    start = time.perf_counter()
                    for _ in range(batch):
                        redis_publish(CHANNEL, payload, durable=durable)
                    samples[durable].append(batch / (time.perf_counter() - start))
            for durable in (True, False):
                rates[durable].append(median(samples[durable]))
    finally:
        server.close()
    d, p = median(rates[True]), median(rates[False])
    print(f"\nredis_publish throughput, medians of {runs} runs of {n}: durable {d:,.0f}/s, plain {p:,.0f}/s, "
          f"ratio {d / p:.2f}x  (goal >= 0.7)")


if __name__ == "__main__":
    main()
