"""Fan-out: one daphne process, N WebSocket clients (another process), rising event rates.

    .venv/bin/python benchmarks/bench_fanout.py [--runs=3] [--n=100,1000,10000] [--clients=4]

Ours: events are Redis PUBLISHes fanned out by the per-process hub. Baseline:
channels-redis the usual way (RedisPubSubChannelLayer, group_add per
subscription, group_send per event). A step is sustainable when >= 99% of
the expected deliveries arrive and p99 latency stays under 1 s; the highest
sustainable step gives the deliveries/s. The clients run in ``--clients``
processes (one process was the bottleneck at 1,000); each step's p99 is the
worst process's. The server's RSS is read before the clients connect and once
all are subscribed: its growth per idle connection is printed.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time

from _common import ROOT, median, runs_arg, start_redis

STEP_SECONDS = 3.0
RAMP = 400  # new connections per second, all client processes together (daphne drops handshakes beyond)
RATES = {100: [10, 25, 50, 100, 200, 300, 400, 600], 1000: [1, 2, 5, 10, 20, 30, 40, 60, 100, 150, 200],
         10000: [1, 2, 3, 5, 8]}


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def clients_arg() -> int:
    return int(next((a.split("=")[1] for a in sys.argv[1:] if a.startswith("--clients=")), "4"))


def wait_port(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server did not start")


def start_server(kind: str, redis_port: int) -> tuple[subprocess.Popen[bytes], int]:
    from tests.support.redis_server import free_port

    port = free_port()
    env = dict(os.environ, PYTHONPATH=f"{ROOT}:{ROOT / 'benchmarks'}", SGM_TEST_REDIS_PORT=str(redis_port),
               BENCH_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0", SGM_TEST_DB_NAME="/tmp/sgm-bench-fanout.sqlite3")
    app = "tests.support.asgi:application" if kind == "ours" else "baseline_app:application"
    if kind == "ours":
        env["DJANGO_SETTINGS_MODULE"] = "tests.support.settings"
    log = open(f"/tmp/sgm-bench-fanout-{kind}.log", "a")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen([sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), app],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log)
    wait_port(port)
    return proc, port


async def publish_step(send: object, step: int, rate: int) -> None:
    count = int(rate * STEP_SECONDS)
    start = time.perf_counter()
    for i in range(count):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await send({"step": step, "t": time.time(), "camera_id": i % 10, "event_type": "motion"})  # type: ignore[operator]
    await send({"mark": step})  # type: ignore[operator]


def read_line(stream: object, timeout: float) -> str | None:
    import select

    ready, _, _ = select.select([stream], [], [], timeout)
    return stream.readline() if ready else None  # type: ignore[attr-defined]


def measure(kind: str, n: int, redis_port: int) -> list[dict]:
    """Steps of rising rate; stop at the first step the server cannot keep up with."""
    import redis.asyncio as aioredis

    server, port = start_server(kind, redis_port)
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    out = []
    processes = min(clients_arg(), n)
    shares = [n // processes + (1 if i < n % processes else 0) for i in range(processes)]
    time.sleep(1.0)
    rss_before = rss_kb(server.pid)
    clients = [subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / "fanout_client.py"), f"ws://127.0.0.1:{port}/subscribe",
         f"http://127.0.0.1:{port}", str(share), str(RAMP / processes)], stdout=subprocess.PIPE, text=True)
        for share in shares]
    loop = asyncio.new_event_loop()
    try:
        for client in clients:
            assert client.stdout is not None
            line = read_line(client.stdout, 300)
            assert line is not None and line.strip() == "READY", line
        time.sleep(1.0)
        per_connection_kb = (rss_kb(server.pid) - rss_before) / n
        conn = aioredis.Redis.from_url(redis_url)
        layer = None
        if kind == "baseline":
            from channels_redis.pubsub import RedisPubSubChannelLayer

            layer = RedisPubSubChannelLayer(hosts=[redis_url])

        async def send(data: dict) -> None:
            if layer is None:
                await conn.publish("camera.events", json.dumps(data))
            else:
                await layer.group_send("camera.events", {"type": "camera.event", "data": data})

        for step, rate in enumerate(RATES[n]):
            loop.run_until_complete(publish_step(send, step, rate))
            lines = [read_line(client.stdout, STEP_SECONDS + 10) for client in clients]
            expected = int(rate * STEP_SECONDS) * n
            if any(line is None for line in lines):
                out.append({"rate": rate, "deliveries_per_s": rate * n, "ok": False, "delivered": 0.0,
                            "p50_ms": 0.0, "p99_ms": float("inf"), "kb_per_connection": per_connection_kb})
                break
            parts = [json.loads(line) for line in lines if line is not None]
            count = sum(p["count"] for p in parts)
            p99s = [p["p99"] for p in parts if p["p99"] is not None]
            p50s = [p["p50"] for p in parts if p["p50"] is not None]
            p99 = max(p99s) if len(p99s) == len(parts) else None
            ok = count >= 0.99 * expected and p99 is not None and p99 < 1.0
            out.append({"rate": rate, "deliveries_per_s": rate * n, "ok": ok, "delivered": count / expected,
                        "p50_ms": median(p50s) * 1000 if p50s else 0.0, "p99_ms": (p99 or 0) * 1000,
                        "kb_per_connection": per_connection_kb})
            if not ok:
                break
        if layer is not None:
            loop.run_until_complete(layer.flush())
        loop.run_until_complete(conn.aclose())
    finally:
        loop.close()
        for client in clients:
            client.kill()
            client.wait()
        server.terminate()
        server.wait(10)
    return out


def measure_with_retry(kind: str, n: int, redis_port: int) -> list[dict]:
    """A run whose very first step delivered nothing failed to set up (seen rarely at N=1000): retry it once."""
    try:
        steps = measure(kind, n, redis_port)
    except AssertionError:
        steps = []
    if not steps or steps[0]["delivered"] == 0:
        print(f"  (N={n} {kind}: set-up failed, retrying once; daphne log in /tmp/sgm-bench-fanout-{kind}.log)",
              flush=True)
        steps = measure(kind, n, redis_port)
    return steps


def main() -> None:
    runs = runs_arg()
    ns = [int(x) for x in next((a.split("=")[1] for a in sys.argv[1:] if a.startswith("--n=")), "100,1000").split(",")]
    server = start_redis()
    summary: dict = {}
    try:
        for run in range(runs):
            for n in ns:
                for kind in ("ours", "baseline"):
                    steps = measure_with_retry(kind, n, server.port)
                    sustainable = max([s["deliveries_per_s"] for s in steps if s["ok"]], default=0)
                    summary.setdefault((n, kind), []).append((sustainable, steps))
                    kb = steps[0]["kb_per_connection"] if steps else float("nan")
                    print(f"run {run + 1} N={n} {kind:8} sustainable {sustainable:7d} deliveries/s, server RSS "
                          f"{kb:.1f} KB per idle connection   " + "  ".join(
                        f"{s['rate']}/s:{'ok' if s['ok'] else 'x'} {s['delivered']:.2f} p99 {s['p99_ms']:.0f}ms"
                        for s in steps), flush=True)
    finally:
        server.close()
    print(f"\nmedian of {runs} runs")
    for n in ns:
        ours = median([s for s, _ in summary[(n, "ours")]])
        base = median([s for s, _ in summary[(n, "baseline")]])
        ratio = ours / base if base else float("inf")
        print(f"  N={n:5}: sustainable deliveries/s ours {ours:8.0f}  baseline {base:8.0f}  ratio {ratio:.2f}x "
              "(goal >= 2)")
        kbs = {kind: median([r[1][0]["kb_per_connection"] for r in summary[(n, kind)] if r[1]] or [float("nan")])
               for kind in ("ours", "baseline")}
        print(f"           server RSS per idle connection: ours {kbs['ours']:.1f} KB, baseline "
              f"{kbs['baseline']:.1f} KB (goal ours <= 30)")
        first = {kind: [r[1][0] for r in summary[(n, kind)] if r[1]] for kind in ("ours", "baseline")}
        print(f"           at {RATES[n][0]} event/s: " + "; ".join(
            f"{kind} delivered {median([s['delivered'] for s in steps]):.2f}, p50 "
            f"{median([s['p50_ms'] for s in steps]):.0f} ms, p99 {median([s['p99_ms'] for s in steps]):.0f} ms"
            for kind, steps in first.items() if steps))
        # p99 at the highest rate both sustained
        both = [i for i in range(len(RATES[n]))
                if all(i < len(r[1]) and r[1][i]["ok"] for r in summary[(n, "ours")] + summary[(n, "baseline")])]
        if both:
            i = both[-1]
            o99 = median([r[1][i]["p99_ms"] for r in summary[(n, "ours")]])
            b99 = median([r[1][i]["p99_ms"] for r in summary[(n, "baseline")]])
            o50 = median([r[1][i]["p50_ms"] for r in summary[(n, "ours")]])
            b50 = median([r[1][i]["p50_ms"] for r in summary[(n, "baseline")]])
            rate = summary[(n, "ours")][0][1][i]["rate"]
            print(f"           at {rate} events/s: p50 ours {o50:.1f} ms baseline {b50:.1f} ms; "
                  f"p99 ours {o99:.1f} ms baseline {b99:.1f} ms (ratio {o99 / b99:.2f}x)")


if __name__ == "__main__":
    main()
