"""One node, Sentinel and Cluster: our cache and publish against raw redis-py on the same topology.

    .venv/bin/python benchmarks/bench_topologies.py [--runs=3] [--keys=1000000]

Per topology: a hit (``@redis_cache`` vs ``GET`` + ``json.loads``), a miss and
fill (vs ``GET`` + ``SET``), a publish (``redis_publish`` vs ``PUBLISH``), and
``invalidate_pattern`` removing 100,000 of 1,000,000 keys (vs a ``scan_iter`` +
batched ``UNLINK`` loop; on the cluster also vs the naive per-key delete over
redis-py's ``RedisCluster.scan_iter``). Figures are medians over runs; ratios
are ours / raw (lower is better).
"""

from __future__ import annotations

import json
import time
from typing import Any

from _common import interleaved, median, option, runs_arg, setup_django, start_redis

BATCH = 250
HITS = 20_000
MISSES = 4_000
PUBLISHES = 10_000
VALUE = {"id": 1, "mac_address": "AA:BB:CC:DD:EE:FF", "settings": {"fps": 25, "res": [1920, 1080]}}


def load(raw: Any, total: int, matching: int) -> None:
    """``total`` keys, ``matching`` of them ``pat:hit:*``, through pipelines of 10,000."""
    hit_every = total // matching
    for start in range(0, total, 10_000):
        pipe = raw.pipeline(transaction=False)
        for i in range(start, min(total, start + 10_000)):
            pipe.set(f"pat:hit:{i}" if i % hit_every == 0 else f"pat:other:{i}", "1")
        pipe.execute()


def raw_unlink_loop(raw: Any, match: str) -> int:
    deleted, batch = 0, []
    for key in raw.scan_iter(match=match, count=10_000):
        batch.append(key)
        if len(batch) >= 1000:
            deleted += raw.unlink(*batch)
            batch = []
    return deleted + (raw.unlink(*batch) if batch else 0)


def naive_delete(raw: Any, match: str) -> int:
    return sum(raw.delete(key) for key in list(raw.scan_iter(match=match, count=10_000)))


def measure(name: str, url: str, raw: Any, total: int, matching: int) -> dict[str, float]:
    from supergraph_messaging import CacheManager, redis_cache, redis_publish
    from supergraph_messaging.redis import client

    client._set_override(url)
    raw.flushall() if not hasattr(raw, "get_primaries") else [
        raw.get_redis_connection(n).flushall() for n in raw.get_primaries()]

    @redis_cache(key="bench:item:{n}", ttl=600)
    def item(n: int) -> dict[str, Any]:
        return VALUE

    item(1)
    # The raw client reads the very key the decorator reads: on a cluster another key would be another
    # node, another redis-server process, and measure that process instead.
    out = interleaved({"hit raw": lambda: json.loads(raw.get("bench:item:1")), "hit ours": lambda: item(1)}, HITS,
                      BATCH)
    counter = iter(range(10**9))

    def raw_miss() -> None:
        key = f"bench:rawmiss:{next(counter)}"
        if raw.get(key) is None:
            raw.set(key, json.dumps(VALUE), ex=600)

    out |= interleaved({"miss+fill raw": raw_miss, "miss+fill ours": lambda: item(next(counter))}, MISSES, BATCH)
    payload = {"id": 1, "name": "x"}
    out |= interleaved({"publish raw": lambda: raw.publish("bench.events", json.dumps(payload)),
                        "publish ours": lambda: redis_publish("bench.events", payload)}, PUBLISHES, BATCH)

    manager = CacheManager()
    load(raw, total, matching)
    start = time.perf_counter()
    deleted = manager.invalidate_pattern("pat:hit:*")
    out["pattern ours"] = (time.perf_counter() - start) * 1e6
    assert deleted == matching, (name, deleted)
    load(raw, total, matching)
    start = time.perf_counter()
    deleted = raw_unlink_loop(raw, "pat:hit:*") if not hasattr(raw, "get_primaries") else naive_delete(
        raw, "pat:hit:*")
    out["pattern raw"] = (time.perf_counter() - start) * 1e6
    assert deleted == matching, (name, deleted)
    return out


def main() -> None:
    import redis
    from redis.sentinel import Sentinel

    from tests.support.topologies import SERVICE, ClusterSetup, SentinelSetup

    runs, total = runs_arg(), int(option("keys", "1000000"))
    matching = total // 10
    single = start_redis()
    sentinel, cluster = SentinelSetup(), ClusterSetup()
    setup_django(single.url, SUPERGRAPH_MESSAGING={"DEFAULT_TTL": 600})
    try:
        raws = {
            "single": (single.url, redis.Redis.from_url(single.url)),
            "sentinel": (sentinel.url(), Sentinel([("127.0.0.1", p) for p in sentinel.ports]).master_for(SERVICE)),
            "cluster": (cluster.url(), redis.RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port)),
        }
        results: dict[str, list[dict[str, float]]] = {name: [] for name in raws}
        for run in range(runs):
            for name, (url, raw) in raws.items():
                results[name].append(measure(name, url, raw, total, matching))
            print(f"run {run + 1}/{runs} done", flush=True)
        print(f"\nmedians of {runs} runs; µs per operation (pattern: ms for {matching:,} of {total:,} keys)")
        print(f"{'topology':<10}{'op':<11}{'raw':>10}{'ours':>10}{'ours/raw':>10}")
        for name, samples in results.items():
            for op in ("hit", "miss+fill", "publish", "pattern"):
                scale = 1000 if op == "pattern" else 1
                raw_v = median([s[f"{op} raw"] for s in samples]) / scale
                ours = median([s[f"{op} ours"] for s in samples]) / scale
                print(f"{name:<10}{op:<11}{raw_v:>10.1f}{ours:>10.1f}{ours / raw_v:>9.2f}x")
        print("\npattern raw: scan_iter + UNLINK batches of 1,000 (single, sentinel); "
              "on the cluster the naive per-key delete over RedisCluster.scan_iter")
    finally:
        cluster.close()
        sentinel.close()
        single.close()


if __name__ == "__main__":
    main()
