"""Jepsen-style counting for durable delivery: a workload, a fault, quiescence, a checker.

Workload: 1,000 writes over 50 rows from 8 threads of a separate "web" process,
each a read-modify-write of a row's version plus ``publish_event`` in one
transaction. A ``messaging_listen`` worker (relay + a ``once=True`` handler
writing one effect row per event) runs beside it. Nemeses, 3 rounds each
within one workload: kill -9 the web process mid-burst (and restart it for
the remaining ops), kill -9 the worker (relay and handler), Redis SIGSTOP
for 3 s, Redis kill + restart with AOF. After quiescence the checker compares
what committed (the outbox) with the channel's stream (an audit read) and
with the handler's effects: lost, effect duplicates and per-row reorders are
asserted to be 0; delivery duplicates are printed.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest
from django.test import override_settings

from supergraph_messaging import streams
from supergraph_messaging.models import OutboxEvent
from tests.conftest import ROOT, manage, subprocess_env, wait_for
from tests.redis_server import RedisServer
from tests.testapp.models import Camera, CameraModel

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

OPS = 1_000
ROUNDS = 3
#: SGM_CHAOS_DELIVERY=pubsub runs the same harness on at-most-once Pub/Sub and only prints what it lost.
MODE = os.environ.get("SGM_CHAOS_DELIVERY", "durable")
DURABLE = {"DELIVERY": MODE, "SERVICE_NAME": "tests"}


class Harness:
    def __init__(self, redis: RedisServer) -> None:
        self.redis = redis
        self.env = {"SGM_TEST_REDIS_PORT": str(redis.port), "SGM_DELIVERY": MODE, "SGM_CLAIM_IDLE": "1",
                    "SGM_CONSUMER": "chaos-worker", "SGM_SQLITE_IMMEDIATE": "1"}
        self.worker: subprocess.Popen[str] | None = None
        self.writer: subprocess.Popen[str] | None = None

    def start_worker(self) -> None:
        self.worker = manage("messaging_listen", **self.env)

    def kill_worker(self) -> None:
        assert self.worker is not None
        self.worker.kill()
        self.worker.wait(10)

    def start_writer(self) -> None:
        first = sum(n or 0 for n in Camera.objects.filter(mac_address__startswith="row")
                    .values_list("complex_id", flat=True))  # restart after as many ops as committed
        self.writer = subprocess.Popen([sys.executable, str(ROOT / "tests/durability/writer.py"), str(first), str(OPS)],
                                       cwd=ROOT, env=subprocess_env(**self.env), stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True)

    def writer_running(self) -> bool:
        return self.writer is not None and self.writer.poll() is None

    def stop(self) -> None:
        for proc in (self.writer, self.worker):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()


def nemesis_kill_web(h: Harness) -> None:
    if h.writer is not None and h.writer.poll() is None:
        h.writer.kill()
        h.writer.wait(10)
    h.start_writer()


def nemesis_kill_worker(h: Harness) -> None:
    h.kill_worker()
    time.sleep(0.5)
    h.start_worker()


def nemesis_sigstop_redis(h: Harness) -> None:
    assert h.redis.process is not None
    h.redis.process.send_signal(signal.SIGSTOP)
    time.sleep(3)
    h.redis.process.send_signal(signal.SIGCONT)


def nemesis_restart_redis(h: Harness) -> None:
    h.redis.restart()


NEMESES: dict[str, Callable[[Harness], None]] = {
    "kill -9 web mid-burst": nemesis_kill_web,
    "kill -9 worker (relay + handler)": nemesis_kill_worker,
    "Redis SIGSTOP 3 s": nemesis_sigstop_redis,
    "Redis restart with AOF": nemesis_restart_redis,
}


@pytest.mark.parametrize("name", list(NEMESES))
def test_nothing_committed_is_lost(name: str) -> None:
    redis = RedisServer(aof=True)
    redis.start()
    harness = Harness(redis)
    try:
        with override_settings(SUPERGRAPH_MESSAGING={**DURABLE, "REDIS_URL": redis.url}):
            harness.start_worker()
            conn = redis.client()
            wait_for(lambda: conn.pubsub_numsub("sgm:relay" if MODE == "durable" else "chaos.rows")[0][1] == 1,
                     timeout=20)
            harness.start_writer()
            for _ in range(ROUNDS):
                time.sleep(1.5)  # the workload runs about 7 s: every round lands mid-burst
                NEMESES[name](harness)
            deadline = time.monotonic() + 120
            while harness.writer_running() and time.monotonic() < deadline:
                time.sleep(0.2)
            # Quiescence: everything committed was relayed and handled (or the time is up).
            committed = dict(OutboxEvent.objects.filter(channel="chaos.rows").values_list("event_id", "payload"))
            if MODE != "durable":  # no outbox: what committed is every row version written
                committed = {f"{r}:{v}": "" for r, n in Camera.objects.filter(mac_address__startswith="row")
                             .values_list("mac_address", "complex_id") for v in range(1, (n or 0) + 1)}

            def effects() -> int:
                return CameraModel.objects.filter(name__startswith="chaos:").count()

            deadline = time.monotonic() + 60
            while effects() < len(committed) and time.monotonic() < deadline:
                time.sleep(0.2)
            conn = redis.client()
            stream = [entry[1] for entry in conn.xrange(streams.keys("chaos.rows")[0])]
            in_stream = collections.Counter(fields[b"o"].decode() for fields in stream)
            names = collections.Counter(CameraModel.objects.filter(name__startswith="chaos:")
                                        .values_list("name", flat=True))
            order = [item.decode().split(":") for item in conn.lrange("chaos:order", 0, -1)]
    finally:
        harness.stop()
        redis.close()
    lost_from_stream = sum(1 for event_id in committed if str(event_id) not in in_stream)
    lost_effects = len(committed) - len(names)
    effect_duplicates = sum(n - 1 for n in names.values() if n > 1)
    delivery_duplicates = len(order) - len(set(map(tuple, order)))
    last: dict[str, int] = {}
    reorders = 0
    for row, version in order:
        if int(version) < last.get(row, 0):
            reorders += 1
        last[row] = max(last.get(row, 0), int(version))
    if MODE != "durable":
        print(f"\n[{name}, DELIVERY=pubsub] committed {len(committed)}: lost effects {len(committed) - len(names)}, "
              f"per-row reorders {reorders}")
        return
    print(f"\n[{name}] committed {len(committed)}: lost from the stream {lost_from_stream}, lost effects "
          f"{lost_effects}, effect duplicates {effect_duplicates}, per-row reorders {reorders}; "
          f"delivery duplicates {delivery_duplicates}")
    assert len(committed) >= OPS * 0.9
    assert lost_from_stream == 0 and lost_effects == 0
    assert effect_duplicates == 0 and reorders == 0
