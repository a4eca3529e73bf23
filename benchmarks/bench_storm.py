"""Reconnect storm: the server restarts under N connected clients, which come back and resume.

    .venv/bin/python benchmarks/bench_storm.py [--runs=1] [--n=10000] [--clients=4]
        [--servers=uvicorn-websockets-sansio] [--gc-threshold=10000] [--profile=storm.svg]
        [--profile-stop=stop.txt]

Durable delivery (``DELIVERY="durable"``): this process publishes every
event with ``redis_publish``, which appends it to the channel's stream, at
``RATE`` events per second throughout:

1. ``before``: N clients (storm_client.py, in ``--clients`` processes) are
   subscribed; 3 s of events.
2. The server gets SIGTERM (SIGKILL if it has not exited after 10 s) and a
   new one starts on the same port at once. The clients reconnect with
   client.js's jittered backoff and subscribe again with ``since``; the
   events published meanwhile reach them through their resume.
3. ``after``: once every client is subscribed again, 3 s more, then a mark.

The clients count what they missed and got twice (events carry a ``seq``),
subscribes answered ``recovered: false`` and gaps. Printed: seconds from the
kill to the last client subscribed again (goal <= 10, with 0 missed and 0
duplicated), the new server's RSS per connection, and p50/p99 latency
before and after the storm; and the server's CPU per connect and subscribe
while the clients first connected (pings included), the cost that decides
how fast a storm is absorbed.

``--gc-threshold=N`` runs the servers with ``gc.set_threshold(N)``, the
setting docs/deployment.md recommends (the default, 700, spends a quarter
of a connect's CPU in the collector). ``--profile=FILE`` records the new
server through the storm with py-spy (on PATH): a flame graph, or raw
stacks when FILE ends in ``.txt``; ``--profile-stop=FILE`` the old server
from a second before its SIGTERM until it exits.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from _common import ROOT, median, runs_arg, start_redis
from bench_fanout import arg, cpu_seconds, read_line, rss_kb, start_server

RATE = 1  # events per second: 10,000 deliveries/s at N=10,000 (the fan-out goal's load)
PHASE_SECONDS = 3.0
RAMP = 400


class Publisher(threading.Thread):
    """``redis_publish`` at RATE/s, each event with the next seq and the phase it was sent in."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.phase = "before"
        self.seq = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        from supergraph_messaging import redis_publish

        start = time.monotonic()
        while not self.stopped.is_set():
            redis_publish("camera.events", {"seq": self.seq, "t": time.time(), "phase": self.phase,
                                            "camera_id": 1, "event_type": "motion"})
            self.seq += 1
            self.stopped.wait(max(0.0, start + self.seq / RATE - time.monotonic()))

    def mark(self) -> None:
        from supergraph_messaging import redis_publish

        self.stopped.set()
        self.join()
        redis_publish("camera.events", {"mark": 1})


def setup_publisher(redis_port: int) -> None:
    import tempfile

    import django

    os.environ.update(DJANGO_SETTINGS_MODULE="tests.support.settings", SGM_TEST_REDIS_PORT=str(redis_port),
                      SGM_DELIVERY="durable", SGM_TEST_DB_NAME=os.path.join(tempfile.mkdtemp(), "storm.sqlite3"))
    django.setup()


def storm(server_kind: str, n: int, redis_port: int) -> dict[str, Any]:
    from tests.support.asgi_servers import stop_server

    env = {"SGM_DELIVERY": "durable"}
    if arg("gc-threshold", ""):
        env["SGM_GC_THRESHOLD"] = arg("gc-threshold", "")
    server, port = start_server("ours", server_kind, redis_port, **env)
    time.sleep(1.0)
    cpu_before = cpu_seconds(server.pid)
    rss_before = rss_kb(server.pid)  # the server alone: what a connection adds is measured against it
    processes = int(arg("clients", "4"))
    shares = [n // processes + (1 if i < n % processes else 0) for i in range(processes)]
    clients = [subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / "storm_client.py"), f"ws://127.0.0.1:{port}/subscribe",
         f"http://127.0.0.1:{port}", str(share), str(RAMP / processes)], stdout=subprocess.PIPE, text=True)
        for share in shares]
    publisher = Publisher()
    try:
        for client in clients:
            line = read_line(client.stdout, 300)
            assert line is not None and line.strip() == "READY", line
        ramp_cpu = cpu_seconds(server.pid) - cpu_before
        time.sleep(1.0)
        publisher.start()
        time.sleep(PHASE_SECONDS)
        publisher.phase = "storm"
        if arg("profile-stop", ""):  # py-spy's flame graph of the old server's shutdown
            subprocess.Popen(["py-spy", "record", "-o", arg("profile-stop", ""), "-r", "250", "-p",
                                    str(server.pid), "-f", "raw" if arg("profile-stop", "").endswith(".txt")
                                    else "flamegraph"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
        killed = time.time()
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        stopped = time.time()
        server, _ = start_server("ours", server_kind, redis_port, port=port, **env)
        listening = time.time()
        profile = arg("profile", "")
        if profile:  # py-spy's flame graph of the new server through the storm
            subprocess.Popen(["py-spy", "record", "-o", profile, "-d", "20", "-p", str(server.pid),
                              "-f", "raw" if profile.endswith(".txt") else "flamegraph"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        resubscribed = []
        for client in clients:
            line = read_line(client.stdout, 120)
            assert line is not None and line.startswith("RESUBSCRIBED"), line
            resubscribed.append(float(line.split()[1]))
        time.sleep(1.0)
        rss = rss_kb(server.pid)
        publisher.phase = "after"
        time.sleep(PHASE_SECONDS)
        publisher.mark()
        reports = []
        for client in clients:
            line = read_line(client.stdout, 60)
            assert line is not None, "a client process did not report"
            reports.append(json.loads(line))
    finally:
        publisher.stopped.set()
        for client in clients:
            client.kill()
            client.wait()
        stop_server(server)

    def worst(key: str) -> float:
        values = [r[key] for r in reports if r[key] is not None]
        return max(values) * 1000 if values else float("nan")

    return {"events": publisher.seq, "stopped_s": stopped - killed, "listening_s": listening - killed,
            "all_back_s": max(resubscribed) - killed, "kb_per_connection": (rss - rss_before) / n,
            "subscribe_cpu_us": ramp_cpu / n * 1e6,
            **{key: sum(r[key] for r in reports) for key in
               ("resubscribed", "missed", "duplicated", "unrecovered", "gaps", "refused", "retries")},
            **{f"{q}_{phase}_ms": worst(f"{q}_{phase}") for q in ("p50", "p99") for phase in ("before", "after")}}


def main() -> None:
    runs = runs_arg()
    n = int(arg("n", "10000"))
    servers = arg("servers", "uvicorn-websockets-sansio").split(",")
    redis = start_redis()
    setup_publisher(redis.port)
    results: dict[str, list[dict[str, Any]]] = {}
    try:
        for run in range(runs):
            for server_kind in servers:
                result = storm(server_kind, n, redis.port)
                results.setdefault(server_kind, []).append(result)
                print(f"run {run + 1} N={n} {server_kind}: " + ", ".join(
                    f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()), flush=True)
    finally:
        redis.close()
    print(f"\nmedian of {runs} runs, N={n} clients, {RATE} events/s throughout (durable delivery)")
    for server_kind, rows in results.items():
        m = {key: median([r[key] for r in rows]) for key in rows[0]}
        print(f"  {server_kind}: all {n} subscribed again {m['all_back_s']:.1f} s after the kill (goal <= 10; the "
              f"new server listened after {m['listening_s']:.1f} s); missed {m['missed']:.0f}, duplicated "
              f"{m['duplicated']:.0f}, unrecovered {m['unrecovered']:.0f}, gaps {m['gaps']:.0f} (goal 0); server RSS "
              f"{m['kb_per_connection']:.1f} KB per connection after; p50/p99 before {m['p50_before_ms']:.0f}/"
              f"{m['p99_before_ms']:.0f} ms, after {m['p50_after_ms']:.0f}/{m['p99_after_ms']:.0f} ms; server CPU "
              f"{m['subscribe_cpu_us']:.0f} us per connect and subscribe")


if __name__ == "__main__":
    main()
