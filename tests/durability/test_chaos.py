"""Jepsen-style counting for durable delivery: a workload, a fault, quiescence, a checker.

Workload (:mod:`tests.durability.harness`): 1,000 writes over 50 rows from 8
HTTP clients against daphne, each a row's version bumped with
``publish_event`` in one transaction, while 2 clients read the rows through
``@redis_cache(invalidate_on=["chaos.rows"])``. A worker runs a ``once=True``
handler (one effect row per event) and the invalidation; two relays share
the outbox (one active at a time). Each nemesis strikes 3 times within one workload.

After quiescence the checker compares what committed (the outbox) with what
an audit consumer group read from the channel's stream and with the
handler's effects, and every cached row with the database: lost, effect
duplicates, per-row reorders and stale cache keys are asserted to be 0
(after a restart of Redis without persistence, what was in Redis is gone:
there only stale keys are asserted, and the losses are printed). Delivery
duplicates are printed. ``SGM_CHAOS_DELIVERY=pubsub`` runs the same
harness on at-most-once Pub/Sub and prints what it loses.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis

from supergraph_messaging.delivery import streams
from tests.durability.harness import ROWS, Clients, Database, Processes
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.slow

OPS = 1_000
ROUNDS = 3
MODE = os.environ.get("SGM_CHAOS_DELIVERY", "durable")
STREAM = streams.keys("chaos.rows")[0]
AUDIT = "audit"


class Run:
    def __init__(self, redis_server: RedisServer, db: Database) -> None:
        self.redis = redis_server
        self.db = db
        self.procs = Processes(redis_server, db, MODE)
        self.audited: collections.Counter[str] = collections.Counter()

    def audit(self) -> None:
        """Read what the stream holds through the audit group (recreated from 0 if Redis lost it)."""
        conn = self.redis.client()
        try:
            for _attempt in range(2):
                try:
                    while batch := conn.xreadgroup(AUDIT, "checker", {STREAM: ">"}, count=1000):
                        for _, entries in batch:
                            self.audited.update(uuid.UUID(fields[b"o"].decode()).hex for _, fields in entries)
                    return
                except redis.ResponseError as exc:
                    if "NOGROUP" not in str(exc):
                        raise
                    conn.xgroup_create(STREAM, AUDIT, id="0", mkstream=True)
        finally:
            conn.close()


def kill_web(run: Run) -> None:
    run.procs.kill("web")
    run.procs.start("web")


def kill_relay(run: Run) -> None:
    run.procs.kill("relay")
    time.sleep(0.5)
    run.procs.start("relay")


def kill_worker(run: Run) -> None:
    run.procs.kill("worker")
    time.sleep(0.5)
    run.procs.start("worker")


def sigstop_redis(run: Run) -> None:
    assert run.redis.process is not None
    run.redis.process.send_signal(signal.SIGSTOP)
    time.sleep(3)
    run.redis.process.send_signal(signal.SIGCONT)


def restart_redis(run: Run) -> None:
    run.redis.restart()


def client_kill(run: Run) -> None:
    """Every connection of every process (daphne, the relays, the worker) closed by Redis at once."""
    run.redis.client_kill("normal")
    run.redis.client_kill("pubsub")


NEMESES: dict[str, tuple[Callable[[Run], None], bool]] = {  # name: (fault, Redis keeps an AOF)
    "kill -9 daphne mid-burst": (kill_web, True),
    "kill -9 the relay": (kill_relay, True),
    "kill -9 the worker mid-handler": (kill_worker, True),
    "Redis SIGSTOP 3 s": (sigstop_redis, True),
    "Redis restart with AOF": (restart_redis, True),
    "CLIENT KILL of every client": (client_kill, True),
    "Redis restart without persistence": (restart_redis, False),
}


def wait_quiet(probe: Callable[[], object], done: Callable[[Any], bool], timeout: float, still: float = 3) -> Any:
    """Until ``done(value)`` or the value stops changing for ``still`` seconds (or the time is up)."""
    deadline = time.monotonic() + timeout
    value, since = probe(), time.monotonic()
    while not done(value) and time.monotonic() < deadline and time.monotonic() - since < still:
        time.sleep(0.2)
        new = probe()
        if new != value:
            value, since = new, time.monotonic()
    return value


@pytest.mark.parametrize("name", [n for n in NEMESES if MODE == "durable" or n != "kill -9 the relay"])
def test_nothing_committed_is_lost(name: str) -> None:
    fault, aof = NEMESES[name]
    redis_server = RedisServer(aof=aof)
    redis_server.start()
    db = Database()
    run = Run(redis_server, db)
    durable = MODE == "durable"
    try:
        conn = redis_server.client()
        conn.xgroup_create(STREAM, AUDIT, id="0", mkstream=True)
        run.procs.start("worker")
        ready = "chaos.rows" if not durable else "sgm:stream:chaos.rows"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # the worker listens (pub/sub) or its groups exist (durable)
            if (conn.pubsub_numsub(ready)[0][1] if not durable else len(conn.xinfo_groups(STREAM)) >= 3):
                break
            time.sleep(0.05)
        if durable:  # two relays: one relays, the other stands by (and takes over when it dies)
            run.procs.start("relay")
            run.procs.start("relay2")
        run.procs.start("web")
        clients = Clients(run.procs.port, OPS)
        clients.start()
        for _ in range(ROUNDS):
            time.sleep(1.5)  # the workload runs about 7 s: every round lands mid-burst
            fault(run)
            run.audit()
        deadline = time.monotonic() + 120
        while clients.writing() and time.monotonic() < deadline:
            time.sleep(0.2)
        clients.stop()
        # Quiescence: everything committed was relayed and handled (or nothing moves any more).
        if durable:
            committed = {uuid.UUID(str(event_id)).hex: json.loads(payload) for event_id, payload in db.query(
                "SELECT event_id, payload FROM supergraph_messaging_outboxevent WHERE channel = 'chaos.rows'")}
        else:  # no outbox: what committed is every version written
            committed = {f"{mac[3:]}:{v}": {} for mac, n in db.query(
                "SELECT mac_address, complex_id FROM testapp_camera WHERE mac_address LIKE 'row%'")
                for v in range(1, (n or 0) + 1)}
        wait_quiet(lambda: db.query("SELECT COUNT(*) FROM testapp_cameramodel WHERE name LIKE 'chaos:%'")[0][0],
                   lambda n: n >= len(committed), timeout=60)
        run.audit()
        effects = [name for (name,) in db.query(
            "SELECT name FROM testapp_cameramodel WHERE name LIKE 'chaos:%' ORDER BY id")]
        versions = {int(mac[3:]): n or 0 for mac, n in db.query(
            "SELECT mac_address, complex_id FROM testapp_camera WHERE mac_address LIKE 'row%'")}
        conn = redis_server.client()
        cached = dict(zip(range(ROWS), conn.mget([f"chaos:row:{row}" for row in range(ROWS)]), strict=True))
        deliveries = len(conn.lrange("chaos:order", 0, -1))
        output = run.procs.output()
    finally:
        run.procs.stop_all()
        redis_server.close()
        db.drop()

    counts = collections.Counter(effects)
    lost_effects = len(committed) - len(counts)
    effect_duplicates = sum(n - 1 for n in counts.values() if n > 1)
    lost_from_stream = sum(1 for event_id in committed if event_id not in run.audited) if durable else None
    last: dict[str, int] = {}
    reorders = 0
    for effect in effects:  # the handler runs one event at a time: effect ids are its handling order
        _, row, version = effect.split(":")
        reorders += int(version) < last.get(row, 0)
        last[row] = max(last.get(row, 0), int(version))
    stale = sorted(row for row, raw in cached.items() if raw is not None and json.loads(raw) != versions.get(row, 0))
    print(f"\n[{name}, {MODE}, {db.vendor}] committed {len(committed)} (client retries {clients.retries}): "
          f"lost from the stream {lost_from_stream}, lost effects {lost_effects}, effect duplicates "
          f"{effect_duplicates}, per-row reorders {reorders}, stale cache keys {len(stale)}; delivery "
          f"duplicates {deliveries - len(counts) if aof else 'n/a (Redis forgot)'}")
    if not durable:
        return
    assert len(committed) >= OPS, output[-3000:]
    assert stale == [], (stale, output[-3000:])
    if not aof:  # Redis forgot what it held: what it had not delivered is gone; the caches were reset
        assert "stream_reset" in output or lost_effects == 0, output[-3000:]
        return
    assert lost_from_stream == 0 and lost_effects == 0, output[-3000:]
    assert effect_duplicates == 0 and reorders == 0
