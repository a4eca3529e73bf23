"""A process of the two-process stampede test: 25 threads miss one key at once."""

from __future__ import annotations

import os
import sys
import threading
import time

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.support.settings")
django.setup()

from supergraph_messaging import get_redis_client, redis_cache  # noqa: E402


@redis_cache(key="stampede:procs")
def slow() -> dict[str, int]:
    get_redis_client().redis.incr("stampede:calls")
    time.sleep(0.5)
    return {"v": 1}


def main() -> None:
    start_at = float(sys.argv[1])
    results: list[object] = []
    threads = [threading.Thread(target=lambda: results.append(slow())) for _ in range(25)]
    time.sleep(max(0.0, start_at - time.time()))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"{sum(r == {'v': 1} for r in results)} ok")


if __name__ == "__main__":
    main()
