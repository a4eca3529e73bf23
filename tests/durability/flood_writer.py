"""The flood test's writer: ``BURSTS`` transactions of ``SIZE`` ``publish_event`` rows each, one a second.

Run as ``python -m tests.durability.flood_writer BURSTS SIZE`` with the harness's database settings;
prints ``wrote N in S s`` when done.
"""

from __future__ import annotations

import os
import sys
import time

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.support.settings")
django.setup()

from django.db import transaction  # noqa: E402

from supergraph_messaging import publish_event  # noqa: E402


def main() -> None:
    bursts, size = int(sys.argv[1]), int(sys.argv[2])
    started = time.monotonic()
    for burst in range(bursts):
        due = started + burst
        time.sleep(max(0.0, due - time.monotonic()))
        with transaction.atomic():
            for n in range(burst * size, (burst + 1) * size):
                publish_event("testapp.ping", {"n": n})
    print(f"wrote {bursts * size} in {time.monotonic() - started:.1f} s", flush=True)


if __name__ == "__main__":
    main()
