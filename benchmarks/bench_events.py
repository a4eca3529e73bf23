"""Events: API write latency with EventConfig against the same ViewSet without it.

    .venv/bin/python benchmarks/bench_events.py [--runs=3]

Create + update requests through DRF's test client (real SQLite, real Redis,
one subscriber listening so every publish has a receiver), interleaved in
batches so machine drift hits both sides alike.
"""

from __future__ import annotations

import time

from _common import median, runs_arg, setup_test_project, start_redis

REQUESTS = 2_000
BATCH = 100


def main() -> None:
    server = start_redis()
    setup_test_project(server)
    from rest_framework.test import APIClient

    sub = server.client().pubsub()
    sub.subscribe("camera.created", "camera.updated")
    client = APIClient()
    counter = iter(range(10**9))

    def batch(prefix: str) -> float:
        start = time.perf_counter()
        for _ in range(BATCH // 2):
            n = next(counter)
            r = client.post(f"/{prefix}/", {"mac_address": f"M{n}", "settings": {"n": n}}, format="json")
            assert r.status_code == 201, r.content
            r = client.patch(f"/{prefix}/{r.json()['id']}/", {"name": "x"}, format="json")
            assert r.status_code == 200
        return (time.perf_counter() - start) / BATCH * 1e6

    runs = runs_arg()
    ratios, ours_all, plain_all = [], [], []
    try:
        batch("cameras"), batch("plain")  # warm up
        for run in range(runs):
            ours, plain = [], []
            for i in range(REQUESTS // BATCH):
                # Alternate which side goes first: SQLite and the OS have their own rhythms.
                if i % 2:
                    plain.append(batch("plain"))
                    ours.append(batch("cameras"))
                else:
                    ours.append(batch("cameras"))
                    plain.append(batch("plain"))
            o, p = median(ours), median(plain)
            ours_all.append(o)
            plain_all.append(p)
            ratios.append(o / p)
            print(f"run {run + 1}: with EventConfig {o:.0f} us/request, without {p:.0f} us/request, "
                  f"ratio {o / p:.3f}x", flush=True)
            while sub.get_message(timeout=0.01):
                pass
    finally:
        sub.close()
        server.close()
    print(f"\nmedian of {runs} runs, {REQUESTS} requests each side (creates and updates):")
    print(f"  with EventConfig {median(ours_all):.0f} us  without {median(plain_all):.0f} us  "
          f"ratio {median(ratios):.3f}x  (goal <= 1.10)")


if __name__ == "__main__":
    main()
