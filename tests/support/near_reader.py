"""The reader process of the near-cache coherence test: reads one key through a near cache in a loop.

Prints ``ready`` once its near cache watches, then one line per read: ``start end value`` (monotonic
seconds, shared by every process on the machine; value -1 for a miss), until stdin closes.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.support.settings")
django.setup()

from supergraph_messaging import CacheManager, get_redis_client  # noqa: E402
from supergraph_messaging.cache.near import near_cache  # noqa: E402


def main() -> None:
    manager = CacheManager(prefix="near", local=True)
    cache = near_cache(get_redis_client())
    deadline = time.monotonic() + 10
    while not cache.watching:
        assert time.monotonic() < deadline, "the near cache never watched"
        time.sleep(0.01)
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    lines = []  # written at the end: a full pipe would stop the reader
    while not done.is_set():
        start = time.monotonic()
        value = manager.get("item", -1)
        lines.append(f"{start:.6f} {time.monotonic():.6f} {value}\n")
        time.sleep(0.0002)  # a process that does other work between reads (and lets other threads run)
    out.write("".join(lines))
    out.write(f"stats {cache.flushes} {cache.reconnects} {cache.invalidations}\n")
    out.flush()


if __name__ == "__main__":
    main()
