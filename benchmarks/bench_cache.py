"""Cache: @redis_cache against raw redis-py, django-redis and cashews, side by side.

    .venv/bin/python benchmarks/bench_cache.py [--runs=3]

Hit latency (sync and async), miss+fill cost, and invalidate_pattern against
django-redis delete_pattern on the same 1,000,000-key keyspace (100,000 match).
Each figure is the median over runs; ratios are ours / anchor (lower is better
for latencies).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from _common import BATCH, cached_lookups, interleaved, median, runs_arg, setup_django, start_redis

HITS = 20_000
MISSES = 5_000
VALUE = {"id": 1, "mac_address": "AA:BB:CC:DD:EE:FF", "model": "Hikvision DS-2CD",
         "settings": {"fps": 25, "res": [1920, 1080]}}




async def ainterleaved(variants: dict[str, Callable[[], Awaitable[Any]]], n: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(n // BATCH):
        for name, fn in variants.items():
            start = time.perf_counter()
            for _ in range(BATCH):
                await fn()
            samples[name].append((time.perf_counter() - start) / BATCH * 1e6)
    return {k: median(v) for k, v in samples.items()}


def _near_watching() -> bool:
    from supergraph_messaging import get_redis_client
    from supergraph_messaging.cache.near import near_cache

    return near_cache(get_redis_client()).watching


def _warm_near(read: Callable[[], Any]) -> None:
    """Until the near cache watches and holds the value (the fill's own invalidation has passed)."""
    read()
    deadline = time.monotonic() + 5
    while not _near_watching() and time.monotonic() < deadline:
        time.sleep(0.01)
    for _ in range(3):
        read()
        time.sleep(0.05)


def bench_hits(url: str) -> dict[str, float]:
    import redis
    from django.core.cache import cache as dj_cache

    raw = redis.Redis.from_url(url)
    ours, near = cached_lookups("bench", VALUE)

    ours("AA")
    _warm_near(lambda: near("AA"))
    dj_cache.set("bench:dj", VALUE, 3600)
    raw_key = "bench:mac:AA"
    return interleaved({
        "ours_sync": lambda: ours("AA"),
        "near_sync": lambda: near("AA"),
        "raw_sync": lambda: json.loads(raw.get(raw_key)),
        "django_redis": lambda: dj_cache.get("bench:dj"),
    }, HITS)


async def abench_hits(url: str) -> dict[str, float]:
    import redis.asyncio as aioredis
    from cashews import Cache
    from cashews import cache as cashews_cache

    from supergraph_messaging import redis_cache

    raw = aioredis.Redis.from_url(url)
    cashews_cache.setup(url, client_side=False)
    cashews_near = Cache()
    cashews_near.setup(url, client_side=True)  # the same BCAST tracking as ours (cashews:* keys)

    @redis_cache(key="bench:amac:{mac}")
    async def ours(mac: str) -> dict[str, Any]:
        return VALUE

    @redis_cache(key="bench:anear:{mac}", local=True)
    async def near(mac: str) -> dict[str, Any]:
        return VALUE

    @cashews_cache(ttl="1h", key="bench:cashews:{mac}")
    async def theirs(mac: str) -> dict[str, Any]:
        return VALUE

    @cashews_near(ttl="1h", key="cashews:near:{mac}")
    async def theirs_near(mac: str) -> dict[str, Any]:
        return VALUE

    await ours("AA")
    await theirs("AA")
    for _ in range(3):
        await theirs_near("AA")
        await asyncio.sleep(0.05)
    await near("AA")
    deadline = time.monotonic() + 5
    while not _near_watching() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    for _ in range(3):
        await near("AA")
        await asyncio.sleep(0.05)
    out = await ainterleaved({
        "ours_async": lambda: ours("AA"),
        "raw_async": lambda: _aget(raw, "bench:amac:AA"),
        "cashews": lambda: theirs("AA"),
        "near_async": lambda: near("AA"),
        "cashews_near": lambda: theirs_near("AA"),
    }, HITS)
    await raw.aclose()
    await cashews_cache.close()
    await cashews_near.close()
    return out


async def _aget(raw: Any, key: str) -> Any:
    return json.loads(await raw.get(key))


def bench_miss(url: str, run: int) -> dict[str, float]:
    import redis

    from supergraph_messaging import redis_cache

    raw = redis.Redis.from_url(url)

    @redis_cache(key="bench:miss:{run}:{i}")
    def ours(run: int, i: int) -> dict[str, Any]:
        return VALUE

    counter = iter(range(10**9))

    def raw_fill() -> None:
        key = f"bench:rawmiss:{run}:{next(counter)}"
        if raw.get(key) is None:
            raw.set(key, json.dumps(VALUE), ex=3600)

    return interleaved({"ours_miss": lambda: ours(run, next(counter)), "raw_miss": raw_fill}, MISSES)


def populate(conn: Any) -> None:
    for batch in range(100):
        pipe = conn.pipeline(transaction=False)
        pipe.mset({f"other:{batch}:{i}": "1" for i in range(9000)})
        pipe.mset({f"hit:{batch}:{i}": "1" for i in range(1000)})
        pipe.execute()


def bench_pattern(url: str) -> dict[str, float]:
    import redis
    from django.core.cache import cache as dj_cache

    from supergraph_messaging import CacheManager

    conn = redis.Redis.from_url(url)
    out = {}
    for name in ("ours_pattern", "django_redis_pattern"):
        conn.flushdb()
        populate(conn)
        start = time.perf_counter()
        if name == "ours_pattern":
            deleted = CacheManager().invalidate_pattern("hit:*")
        else:
            deleted = dj_cache.delete_pattern("hit:*")
        out[name] = time.perf_counter() - start
        assert deleted == 100_000, (name, deleted)
    conn.flushdb()
    return out


def main() -> None:
    server = start_redis()
    setup_django(server.url)
    runs = runs_arg()
    results: dict[str, list[float]] = {}
    try:
        for run in range(runs):
            figures = {**bench_hits(server.url), **asyncio.run(abench_hits(server.url)),
                       **bench_miss(server.url, run), **bench_pattern(server.url)}
            for k, v in figures.items():
                results.setdefault(k, []).append(v)
            print(f"run {run + 1}: " + "  ".join(f"{k}={v:.2f}" for k, v in figures.items()), flush=True)
    finally:
        server.close()
    m = {k: median(v) for k, v in results.items()}
    print(f"\nmedian of {runs} runs ({HITS} hits, {MISSES} misses; pattern: 100,000 of 1,000,000 keys)")
    rows = [
        ("hit, sync   @redis_cache", "ours_sync", "raw GET+json.loads", "raw_sync", "goal <= 1.00"),
        ("hit, sync   @redis_cache", "ours_sync", "django-redis cache.get", "django_redis", "goal <= 0.90"),
        ("hit, async  @redis_cache", "ours_async", "raw async GET+json.loads", "raw_async", "goal <= 1.00"),
        ("hit, async  @redis_cache", "ours_async", "cashews @cache", "cashews", ""),
        ("miss+fill   @redis_cache", "ours_miss", "raw GET+SET", "raw_miss", "goal <= 1.15"),
        ("near hit, sync  local=True", "near_sync", "raw GET+json.loads", "raw_sync", "goal <= 0.05"),
        ("near hit, async local=True", "near_async", "raw async GET+json.loads", "raw_async", "goal <= 0.05"),
        ("near hit, async local=True", "near_async", "cashews client_side=True", "cashews_near", ""),
    ]
    for label, ours, anchor_label, anchor, goal in rows:
        print(f"  {label} {m[ours]:8.1f} us  vs {anchor_label:26} {m[anchor]:8.1f} us  "
              f"ratio {m[ours] / m[anchor]:.{3 if m[ours] < 0.1 * m[anchor] else 2}f}x  {goal}")
    print(f"  invalidate_pattern {m['ours_pattern']:.2f} s  vs django-redis delete_pattern "
          f"{m['django_redis_pattern']:.2f} s  speed-up {m['django_redis_pattern'] / m['ours_pattern']:.1f}x"
          "  (goal >= 2)")


if __name__ == "__main__":
    main()
