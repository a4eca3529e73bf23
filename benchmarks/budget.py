"""Performance budgets that a noisy machine cannot blur: CPU instructions per operation, counted by valgrind.

    python benchmarks/budget.py            # count, compare with benchmarks/budget.json; exit 1 on a budget overrun
    python benchmarks/budget.py --update   # the median of three runs as the new baseline (say why in the commit)

Wall-clock ratios on a shared 2-core machine drift by +-15%; instruction counts
do not (the sync hit counted the same, to the instruction, in two runs). The
driver starts a private redis-server and runs this file again (``--child``)
under callgrind with ``PYTHONHASHSEED=0``: only that client process is counted,
never Redis. Callgrind collects nothing at start and toggles collection on the
entry and exit of ``_operator_call``, the C function behind
``operator.call``, which nothing else here calls; ``--dump-after`` writes one
count per batch. So each batch, ``operator.call(batch)``, is counted alone, after
set-up and warm-up, and without other threads (the near cache's listener and
the event publisher's thread run outside the count).

Address-space randomisation is off (``setarch -R``). Each operation runs
``REPEAT`` batches of ``n`` with the cyclic garbage collector off (when a
collection lands depends on everything that ran before), and keeps the lowest
count (a periodic timer firing mid-batch only adds). Budgets fail at +10% over
the baseline. The anchors (raw redis-py, django-redis) are counted in the same
run for the ratio, and have no budget: a new redis-py may move them.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import operator
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, cached_lookups, option, setup_test_project, start_redis

BASELINE = ROOT / "benchmarks" / "budget.json"
TOLERANCE = 0.10
REPEAT = 3
PAIRS = 5
VALUE = {"id": 7, "mac_address": "AA:BB:CC:00:11:22", "name": "camera seven", "settings": {"fps": 25, "hd": True}}
#: What each budget counts, and the anchor it is shown against (no budget of its own).
OPERATIONS = {
    "sync_hit": ("@redis_cache hit, sync", "raw_get"),
    "async_hit": ("@redis_cache hit, async", "raw_aget"),
    "near_hit": ("near-cache hit (local=True), sync", "raw_get"),
    "miss_fill": ("@redis_cache miss + fill, sync", "raw_get_set"),
    "pubsub_message": ("Pub/Sub message to an async handler (RedisSubscriber)", "raw_pubsub"),
    "event_publish": ("ViewSet create: what EventConfig adds (request thread)", None),
    "fanout_100": ("one event to 100 subscribed WebSockets", None),
}
ANCHORS = {
    "raw_get": "redis-py GET + json.loads",
    "raw_aget": "redis-py asyncio GET + json.loads",
    "raw_get_set": "redis-py GET (miss) + SET",
    "django_redis_get": "django-redis cache.get",
    "raw_pubsub": "redis-py asyncio PubSub get_message loop",
}


# -- the child: under callgrind --------------------------------------------------------------------
class Batches:
    """Runs each batch inside ``operator.call`` (what callgrind counts) and notes its name and size, in order."""

    def __init__(self) -> None:
        self.order: list[tuple[str, int]] = []

    def run(self, name: str, n: int, batch: Callable[[], Any], repeat: int = REPEAT) -> None:
        for _ in range(repeat):
            gc.collect()
            gc.disable()  # a collection lands in one batch or another depending on what ran before
            try:
                operator.call(batch)
            finally:
                gc.enable()
            self.order.append((name, n))


def sync_batch(op: Callable[[], Any], n: int) -> Callable[[], None]:
    def batch() -> None:
        for _ in range(n):
            op()
    return batch


def child() -> None:
    from _common import RedisServer

    server = RedisServer(port=int(option("port", "0")))  # started by the driver; not ours to stop
    setup_test_project(server)
    from supergraph_messaging import counters

    # The Prometheus exporter's thread wakes once a second: under valgrind, 50 times slower, it would add
    # its work to whatever operation is being counted. What an operation itself counts stays measured.
    counters.on_first_count = None
    import redis
    import redis.asyncio as aioredis
    from django.conf import settings
    from django.core.cache import cache as dj_cache
    from django.urls import clear_url_caches

    from supergraph_messaging import redis_cache

    batches = Batches()
    raw = redis.Redis.from_url(server.url)
    raw.set("budget:raw", json.dumps(VALUE))
    dj_cache.set("budget:dj", VALUE, None)

    lookup, near = cached_lookups("budget", VALUE)

    @redis_cache(key="budget:miss:{mac}")
    def miss(mac: str) -> dict[str, Any]:
        return VALUE

    @redis_cache(key="budget:ahit:{mac}")
    async def alookup(mac: str) -> dict[str, Any]:
        return VALUE

    counter = itertools.count()
    ops: dict[str, tuple[int, Callable[[], Any]]] = {
        "raw_get": (200, lambda: json.loads(raw.get("budget:raw"))),  # type: ignore[arg-type]
        "django_redis_get": (200, lambda: dj_cache.get("budget:dj")),
        "sync_hit": (200, lambda: lookup("AA")),
        "near_hit": (500, lambda: near("AA")),
        "raw_get_set": (100, lambda: raw.get(k := f"budget:rawmiss:{next(counter)}")
                        or raw.set(k, json.dumps(VALUE), ex=3600)),
        "miss_fill": (100, lambda: miss(f"m{next(counter)}")),
    }
    for name, (n, op) in ops.items():
        for _ in range(20):
            op()  # warm: connections, memo, near cache
        batches.run(name, n, sync_batch(op, n))

    loop = asyncio.new_event_loop()
    araw = aioredis.Redis.from_url(server.url)

    async def araw_get() -> Any:
        return json.loads(await araw.get("budget:raw"))  # type: ignore[arg-type]

    for name, n, aop in (("raw_aget", 200, araw_get), ("async_hit", 200, lambda: alookup("AA"))):
        async def many(aop: Callable[[], Any] = aop, n: int = n) -> None:
            for _ in range(n):
                await aop()
        loop.run_until_complete(many())  # warm
        batches.run(name, n, lambda many=many: loop.run_until_complete(many()))  # type: ignore[misc]

    pubsub_messages(batches, loop, raw, server.url)

    # A ViewSet create with EventConfig against the same create without it (benchmarks/bench_urls.py).
    from rest_framework.test import APIClient

    settings.ROOT_URLCONF = "bench_urls"
    clear_url_caches()
    api = APIClient()

    def create(prefix: str) -> Callable[[], None]:
        def op() -> None:
            n = next(counter)
            response = api.post(f"/{prefix}/", {"mac_address": f"M{n}", "settings": {"n": n}}, format="json")
            assert response.status_code == 201, response.content
        return op

    for prefix in ("plain", "cameras"):
        for _ in range(20):
            create(prefix)()
    # In pairs, each side's batch right after the other's: the extra is the median of the pairs'
    # differences, so what drifts over the run (the tables grow) cancels.
    for _ in range(PAIRS):
        batches.run("create_plain", 40, sync_batch(create("plain"), 40), repeat=1)
        batches.run("create_cameras", 40, sync_batch(create("cameras"), 40), repeat=1)

    sockets = loop.run_until_complete(subscribed_sockets(100))
    loop.run_until_complete(events(sockets, 3))  # warm
    batches.run("fanout_100", 10, lambda: loop.run_until_complete(events(sockets, 10)))
    Path(option("order", "")).write_text(json.dumps(batches.order))


def pubsub_messages(batches: Batches, loop: asyncio.AbstractEventLoop, raw: Any, url: str, n: int = 1000) -> None:
    """A batch: ``n`` messages, already waiting in the socket, read and handed to an async handler; by a
    RedisSubscriber, and by a bare redis-py asyncio PubSub loop (the anchor)."""
    import redis.asyncio as aioredis

    from supergraph_messaging import RedisSubscriber

    def waiting(channel: str) -> None:
        pipe = raw.pipeline(transaction=False)
        for i in range(n):
            pipe.publish(channel, json.dumps({"n": i, "t": 0.0, "pad": "x" * 100}))
        pipe.execute()
        time.sleep(0.5)

    handled = [0]
    done = asyncio.Event()

    async def handler(data: Any) -> None:
        handled[0] += 1
        if handled[0] >= n:
            done.set()

    subscriber = RedisSubscriber()
    subscriber.on("budget.pubsub")(handler)
    loop.run_until_complete(subscriber.start())
    loop.run_until_complete(subscriber.wait_subscribed("budget.pubsub"))
    for _ in range(REPEAT):
        handled[0] = 0
        done.clear()
        waiting("budget.pubsub")
        batches.run("pubsub_message", n, lambda: loop.run_until_complete(done.wait()), repeat=1)
    loop.run_until_complete(subscriber.stop())

    async def bare() -> Any:
        pubsub = aioredis.Redis.from_url(url).pubsub()
        await pubsub.subscribe("budget.raw")
        while (await pubsub.get_message(timeout=1.0)) is None and not pubsub.subscribed:
            pass
        return pubsub

    pubsub = loop.run_until_complete(bare())

    async def consume() -> None:
        got = 0
        while got < n:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None:
                await handler(json.loads(message["data"]))
                got += 1

    for _ in range(REPEAT):
        waiting("budget.raw")
        batches.run("raw_pubsub", n, lambda: loop.run_until_complete(consume()), repeat=1)


async def subscribed_sockets(n: int) -> list[Any]:
    """``n`` consumers of /subscribe (Channels' in-process communicator), each subscribed to CameraEvents."""
    from channels.testing import WebsocketCommunicator

    from tests.support.asgi import application

    sockets = []
    for _ in range(n):
        comm = WebsocketCommunicator(application, "/subscribe", headers=[(b"origin", b"http://testserver")])
        assert (await comm.connect())[0]
        await comm.send_json_to({"type": "connection_init", "payload": {}})
        assert (await comm.receive_json_from())["type"] == "connection_ack"
        await comm.send_json_to({"id": "1", "type": "subscribe", "payload": {"entity": "CameraEvents"}})
        assert (await comm.receive_json_from(timeout=5))["type"] == "subscribed"
        sockets.append(comm)
    return sockets


async def events(sockets: list[Any], n: int) -> None:
    """Publish ``n`` events, each awaited on every socket before the next."""
    from supergraph_messaging import aredis_publish

    for _ in range(n):
        await aredis_publish("camera.events", {"camera_id": 1, "event_type": "motion"})
        for comm in sockets:
            await comm.output_queue.get()  # not receive_output(): its wait_for would cost more than the frame


# -- the driver --------------------------------------------------------------------------------------
def main() -> None:
    if "--child" in sys.argv:
        child()
        return
    if shutil.which("valgrind") is None:
        sys.exit("budget.py needs valgrind (Debian: apt-get install valgrind).")
    # The baseline is the median of three counted runs: what a run's own process adds (the ViewSet write's
    # extra moved by up to 6% between runs and checkouts) is then not written into it.
    runs = [counted_run() for _ in range(3 if "--update" in sys.argv else 1)]
    report({name: int(statistics.median(run[name] for run in runs)) for name in runs[0]})


def counted_run() -> dict[str, int]:
    """One run of the child under callgrind against a fresh redis-server: instructions per operation."""
    server = start_redis()
    out = Path(tempfile.mkdtemp(prefix="sgm-budget-"))
    order = out / "order.json"
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    try:
        # Without address-space randomisation where setarch can turn it off: what hashes by id() then
        # iterates the same way every run (the sync hit counted the same to the instruction, twice).
        fixed = ["setarch", os.uname().machine, "-R"] if shutil.which("setarch") else []
        done = subprocess.run(
            [*fixed, "valgrind", "--tool=callgrind", "--collect-atstart=no", "--toggle-collect=_operator_call",
             "--dump-after=_operator_call", f"--callgrind-out-file={out}/cg.out", sys.executable,
             __file__, "--child", f"--port={server.port}", f"--order={order}"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=900)
        if done.returncode != 0:
            sys.exit(f"the counted run failed:\n{done.stderr[-4000:]}")
        return instructions(out, json.loads(order.read_text()))
    finally:
        server.close()
        shutil.rmtree(out, ignore_errors=True)


def instructions(out: Path, order: list[tuple[str, int]]) -> dict[str, int]:
    """Instructions per operation, each the lowest of its batches."""
    dumps = sorted(out.glob("cg.out.*"), key=lambda p: int(p.suffix[1:]))
    assert len(dumps) == len(order), f"{len(dumps)} counts for {len(order)} batches"
    best: dict[str, int] = {}
    creates: dict[str, list[int]] = {"create_plain": [], "create_cameras": []}
    for dump, (name, n) in zip(dumps, order, strict=True):
        total = next(int(line.split()[1]) for line in dump.read_text().splitlines() if line.startswith("totals:"))
        best[name] = min(best.get(name, total // n), total // n)
        creates.get(name, []).append(total // n)
    pairs = zip(creates["create_plain"], creates["create_cameras"], strict=True)
    extras = [with_events - without for without, with_events in pairs]
    best["event_publish"] = int(statistics.median(extras))
    return best


def report(counts: dict[str, int]) -> None:
    baseline = json.loads(BASELINE.read_text()) if BASELINE.exists() else {}
    over = []
    print(f"{'budget':<58} {'instructions/op':>16} {'baseline':>10} {'change':>8}   anchor")
    for name, (what, anchor) in OPERATIONS.items():
        now, was = counts[name], baseline.get(name)
        change = f"{(now / was - 1) * 100:+.1f}%" if was else "new"
        if was and now > was * (1 + TOLERANCE):
            over.append(name)
        versus = f"{now / counts[anchor]:.2f}x {ANCHORS[anchor]} ({counts[anchor]:,})" if anchor else ""
        print(f"{what:<58} {now:>16,} {was or 0:>10,} {change:>8}   {versus}")
    print(f"{'(django-redis cache.get)':<58} {counts['django_redis_get']:>16,}")
    print(f"{'(ViewSet create without / with EventConfig)':<58} {counts['create_plain']:>16,} "
          f"{counts['create_cameras']:>10,}")
    if "--update" in sys.argv:
        BASELINE.write_text(json.dumps({name: counts[name] for name in OPERATIONS}, indent=2) + "\n")
        print(f"wrote {BASELINE.relative_to(ROOT)}")
        return
    if over:
        sys.exit(f"over budget (more than +{TOLERANCE:.0%}): {', '.join(over)}. If the growth is deliberate, "
                 "`make budget-update` and say why in the commit.")


if __name__ == "__main__":
    main()
