"""Latency through the gateway vs the service's own ``/subscribe``, in the same run.

    .venv/bin/python benchmarks/bench_gateway.py [--runs=3] [--n=100] [--rate=50] [--seconds=10] [--idle=1000]

Two daphne processes on one Redis: the service (tests.testapp's entities)
and a gateway federating it (``GATEWAY_SERVICES``; no entities, code or
database of the service). ``--n`` clients (two client processes) subscribe
to ``CameraEvents`` either directly at the service or through the gateway,
the two in alternating order per run, and the events are published to Redis
at ``--rate`` per second for ``--seconds``; latency is from the publisher's
clock to the client's. Then ``--idle`` clients connect to the gateway and
subscribe, and its RSS growth per idle connection is printed (the service's
beside it). The goal (issue 13): gateway p99 <= 1.2x direct.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

from _common import ROOT, median, option, runs_arg, start_redis
from bench_fanout import read_line, rss_kb, wait_port

TOKEN = "bench-gateway-shared-service-token-0123456789"
CLIENT_PROCESSES = 2


def start(redis_port: int, role: str, **env: str) -> tuple[subprocess.Popen[bytes], int]:
    from tests.support.redis_server import free_port

    port = free_port()
    full = dict(os.environ, PYTHONPATH=str(ROOT), SGM_TEST_REDIS_PORT=str(redis_port), SGM_SERVICE_TOKEN=TOKEN,
                SGM_TEST_ROLE=role, SGM_TEST_DB_NAME="/tmp/sgm-bench-gateway.sqlite3",
                DJANGO_SETTINGS_MODULE="tests.support.settings", **env)
    log = open(f"/tmp/sgm-bench-gateway-{role}.log", "a")  # noqa: SIM115 - lives as long as the server
    command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "tests.support.asgi:application"]
    proc = subprocess.Popen(command, cwd=ROOT, env=full, stdout=subprocess.DEVNULL, stderr=log)
    wait_port(port)
    return proc, port


def clients(port: int, n: int) -> list[subprocess.Popen[str]]:
    shares = [n // CLIENT_PROCESSES + (1 if i < n % CLIENT_PROCESSES else 0) for i in range(CLIENT_PROCESSES)]
    procs = [subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / "fanout_client.py"), f"ws://127.0.0.1:{port}/subscribe",
         f"http://127.0.0.1:{port}", str(share), "200"], stdout=subprocess.PIPE, text=True)
        for share in shares if share]
    for proc in procs:
        line = read_line(proc.stdout, 300)
        assert line is not None and line.strip() == "READY", f"clients did not subscribe: {line!r}"
    return procs


def stop(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        proc.kill()
        proc.wait()


async def publish(redis_url: str, step: int, rate: int, seconds: float) -> None:
    import redis.asyncio as aioredis

    conn = aioredis.Redis.from_url(redis_url)
    count, start_at = int(rate * seconds), time.perf_counter()
    for i in range(count):
        delay = start_at + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await conn.publish("camera.events", json.dumps({"step": step, "t": time.time(), "camera_id": i % 10}))
    await conn.publish("camera.events", json.dumps({"mark": step}))
    await conn.aclose()


def measure(port: int, redis_url: str, n: int, rate: int, seconds: float, step: int) -> dict[str, float]:
    procs = clients(port, n)
    try:
        time.sleep(0.5)
        asyncio.run(publish(redis_url, step, rate, seconds))
        parts = [json.loads(line) for line in (read_line(p.stdout, seconds + 30) for p in procs) if line]
        assert len(parts) == len(procs), "a client process reported nothing"
    finally:
        stop(procs)
    expected = int(rate * seconds) * n
    return {"delivered": sum(p["count"] for p in parts) / expected,
            "p50_ms": median([p["p50"] for p in parts]) * 1000, "p99_ms": max(p["p99"] for p in parts) * 1000}


def idle_kb(proc: subprocess.Popen[bytes], port: int, n: int) -> float:
    before = rss_kb(proc.pid)
    procs = clients(port, n)
    try:
        time.sleep(1.0)
        return (rss_kb(proc.pid) - before) / n
    finally:
        stop(procs)


def main() -> None:
    runs, n = runs_arg(), int(option("n", "100"))
    rate, seconds, idle = int(option("rate", "50")), float(option("seconds", "10")), int(option("idle", "1000"))
    redis_server = start_redis()
    redis_url = f"redis://127.0.0.1:{redis_server.port}/0"
    service, service_port = start(redis_server.port, "service")
    gateway, gateway_port = start(redis_server.port, "gateway", SGM_GATEWAY_SERVICES=json.dumps(
        {"tests": f"http://127.0.0.1:{service_port}"}))
    results: dict[str, list[dict[str, float]]] = {"direct": [], "gateway": []}
    step = 0
    try:
        for run in range(runs):
            order = ("direct", "gateway") if run % 2 == 0 else ("gateway", "direct")
            for kind in order:
                step += 1
                port = service_port if kind == "direct" else gateway_port
                result = measure(port, redis_url, n, rate, seconds, step)
                results[kind].append(result)
                print(f"run {run + 1} {kind:8} delivered {result['delivered']:.3f}  p50 {result['p50_ms']:6.2f} ms  "
                      f"p99 {result['p99_ms']:6.2f} ms", flush=True)
        # Twice each: the first fill includes the high-water of the subscribes' work (on the gateway, the
        # /__authorize calls in flight); the second, into memory the first freed, is what a connection holds.
        kb = {name: [idle_kb(proc, port, idle) for _ in range(2)]
              for name, proc, port in (("gateway", gateway, gateway_port), ("service", service, service_port))}
    finally:
        for proc in (gateway, service):
            proc.terminate()
            proc.wait(10)
        redis_server.close()
    p50 = {k: median([r["p50_ms"] for r in v]) for k, v in results.items()}
    p99 = {k: median([r["p99_ms"] for r in v]) for k, v in results.items()}
    print(f"\nmedian of {runs} runs, {n} clients, {rate} events/s for {seconds:.0f} s:")
    print(f"  direct  p50 {p50['direct']:6.2f} ms  p99 {p99['direct']:6.2f} ms")
    print(f"  gateway p50 {p50['gateway']:6.2f} ms  p99 {p99['gateway']:6.2f} ms")
    print(f"  gateway / direct: p50 {p50['gateway'] / p50['direct']:.2f}x  p99 {p99['gateway'] / p99['direct']:.2f}x "
          "(goal p99 <= 1.2x)")
    print(f"  RSS growth per idle subscribed connection ({idle} clients), first fill / second fill: "
          f"gateway {kb['gateway'][0]:.1f} / {kb['gateway'][1]:.1f} KB, "
          f"service {kb['service'][0]:.1f} / {kb['service'][1]:.1f} KB")


if __name__ == "__main__":
    main()
