"""``manage.py messaging_listen``: run the global subscriber as a worker."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from django.core.management.base import BaseCommand

from supergraph_messaging.pubsub import get_global_subscriber

logger = logging.getLogger("supergraph_messaging.worker")


class Command(BaseCommand):
    help = (
        "Listen to Redis Pub/Sub and run the handlers of every app's subscribers.py, "
        "including @redis_cache(invalidate_on=...) invalidations. Stops on SIGTERM/SIGINT."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        subscriber = get_global_subscriber()
        channels = subscriber.channels
        if not channels:
            self.stderr.write("No handlers registered: add subscribers.py modules to your apps.")
        self.stdout.write("Listening on: " + (", ".join(sorted(channels)) or "(nothing yet)"))
        self.stdout.flush()
        asyncio.run(subscriber.serve())
        self.stdout.write("Stopped.")
