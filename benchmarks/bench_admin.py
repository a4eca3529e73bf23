"""Admin on a big Redis: the key-list page and a pattern search, against a naive KEYS listing.

    .venv/bin/python benchmarks/bench_admin.py [--runs=3]

1,000,000 keys. Ours renders the real admin changelist (SCAN cursor paging,
type/TTL/size/preview pipelined). The naive listing does what a quick admin
would: KEYS <pattern>, sort, then describe the first 100 keys.
"""

from __future__ import annotations

import time

from _common import median, runs_arg, setup_test_project, start_redis


def main() -> None:
    server = start_redis()
    setup_test_project(server)
    from django.contrib.auth.models import User
    from django.test import Client
    from django.test.utils import setup_test_environment

    from supergraph_messaging.admin import keyspace

    setup_test_environment()  # so responses carry their template context
    client = Client()
    client.force_login(User.objects.create_superuser("bench", "b@example.com", "pw"))
    conn = server.client()
    for batch in range(100):
        pipe = conn.pipeline(transaction=False)
        pipe.mset({f"camera:mac:{batch}:{i}": '{"id": 1}' for i in range(9_990)})
        pipe.mset({f"user:{batch}:{i}": '{"name": "x"}' for i in range(10)})
        pipe.execute()
    print(f"{conn.dbsize()} keys", flush=True)

    def ours(pattern: str) -> float:
        start = time.perf_counter()
        r = client.get("/admin/supergraph_messaging/cachekey/", {"q": pattern})
        assert r.status_code == 200 and r.context["rows"]
        return time.perf_counter() - start

    def naive(pattern: str) -> float:
        start = time.perf_counter()
        keys = sorted(conn.keys(pattern))[:100]
        rows = keyspace.describe(keys)
        assert rows
        return time.perf_counter() - start

    ours("*")  # warm up templates and connections
    runs = runs_arg()
    results: dict[str, list[float]] = {}
    try:
        for run in range(runs):
            figures = {
                "ours_list": median([ours("*") for _ in range(5)]), "naive_list": naive("*"),
                "ours_search": median([ours("user:*") for _ in range(5)]), "naive_search": naive("user:*"),
            }
            for k, v in figures.items():
                results.setdefault(k, []).append(v)
            print(f"run {run + 1}: " + "  ".join(f"{k}={v * 1000:.0f}ms" for k, v in figures.items()), flush=True)
    finally:
        server.close()
    m = {k: median(v) * 1000 for k, v in results.items()}
    print(f"\nmedian of {runs} runs, 1,000,000 keys")
    print(f"  key list page     ours {m['ours_list']:8.1f} ms   naive KEYS {m['naive_list']:8.1f} ms   "
          f"{m['naive_list'] / m['ours_list']:.1f}x faster")
    print(f"  search 'user:*'   ours {m['ours_search']:8.1f} ms   naive KEYS {m['naive_search']:8.1f} ms   "
          f"{m['naive_search'] / m['ours_search']:.1f}x faster (1,000 of 1,000,000 match)")


if __name__ == "__main__":
    main()
