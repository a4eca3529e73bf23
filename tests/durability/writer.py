"""The durability harness's web process: 8 threads of read-modify-write + publish_event, one per op.

    python tests/durability/writer.py FIRST LAST

Each op increments a row's version and publishes {"row", "version", "op"} in
the same transaction. What committed is what the outbox table holds.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
django.setup()

from django.db import OperationalError, close_old_connections, transaction  # noqa: E402

from supergraph_messaging import publish_event  # noqa: E402
from tests.testapp.models import Camera  # noqa: E402

ROWS = 50
THREADS = 8


def write(op: int) -> None:
    row = op % ROWS
    with transaction.atomic():
        camera, _ = Camera.objects.get_or_create(mac_address=f"row{row}")
        camera.complex_id = (camera.complex_id or 0) + 1
        camera.save(update_fields=["complex_id"])
        publish_event("chaos.rows", {"row": row, "version": camera.complex_id, "op": op})


def worker(ops: list[int]) -> None:
    for op in ops:
        for _attempt in range(50):
            try:
                write(op)
                break
            except OperationalError:  # "database is locked": SQLite under 8 writers
                time.sleep(0.01)
        time.sleep(0.045)  # about 150 writes/s in all: a burst that the nemeses land in
    close_old_connections()


def main() -> None:
    first, last = int(sys.argv[1]), int(sys.argv[2])
    ops = list(range(first, last))
    threads = [threading.Thread(target=worker, args=(ops[i::THREADS],)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("done", flush=True)


if __name__ == "__main__":
    main()
