"""Issue 26's outbox flood at full scale, with real processes: nothing trimmed before a lagging group read it.

A writer process commits 5 bursts of 10,000 ``publish_event`` rows, a
second apart; a relay (``messaging_listen --relay-only``) appends them to the
stream; a worker (``messaging_listen --no-relay``) runs ``testapp.ping``'s
handler through its consumer group, which falls behind. Before, the stream
was trimmed to ``STREAM_MAXLEN`` (10,000) at each append: the handler saw
14,531 of 50,000, with no log line. The checker compares the rows committed
with the handler's effects once the worker is quiet.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from supergraph_messaging.delivery import streams
from tests.conftest import ROOT
from tests.durability.harness import Database, Processes, process_env
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.slow
BURSTS, SIZE = 5, 10_000


def test_an_outbox_flood_loses_nothing_to_a_lagging_consumer_group(own_redis: RedisServer) -> None:
    db = Database()
    procs = Processes(own_redis, db, "durable")
    conn = own_redis.client()
    stream = streams.keys("testapp.ping")[0]
    try:
        procs.start("worker")
        deadline = time.monotonic() + 30
        while not (conn.exists(stream) and conn.xinfo_groups(stream)):  # the worker's group is there
            assert time.monotonic() < deadline, procs.output()
            time.sleep(0.1)
        procs.start("relay")
        started = time.monotonic()
        writer = subprocess.run([sys.executable, "-m", "tests.durability.flood_writer", str(BURSTS), str(SIZE)],
                                cwd=ROOT, env=process_env(procs.env), capture_output=True, text=True, timeout=300)
        assert writer.returncode == 0, writer.stderr
        handled, last_change, peak_lag = 0, time.monotonic(), 0
        while handled < BURSTS * SIZE and time.monotonic() - last_change < 20:
            time.sleep(0.2)
            now = conn.llen("testapp:pings")
            if now != handled:
                handled, last_change = now, time.monotonic()
            groups = conn.xinfo_groups(stream)
            peak_lag = max(peak_lag, max((g.get("lag") or 0) for g in groups))
        took = time.monotonic() - started
        effects = [int(n) for n in conn.lrange("testapp:pings", 0, -1)]
    finally:
        log = procs.output()
        procs.stop_all()
        db.drop()
    missing = set(range(BURSTS * SIZE)) - set(effects)
    print(f"\noutbox flood, {BURSTS} x {SIZE:,} rows ({writer.stdout.strip()}): the handler ran for {len(effects):,} "
          f"({len(set(effects)):,} distinct), lost {len(missing)}, in {took:.1f} s; the group lagged up to "
          f"{peak_lag:,} entries (STREAM_MAXLEN 10,000)")
    assert not missing
    assert "STREAM_HARD_MAXLEN" not in log
