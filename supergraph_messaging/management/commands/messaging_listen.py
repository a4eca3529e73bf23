"""``manage.py messaging_listen``: run the global subscriber as a worker (and the outbox relay when durable)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from django.core.management.base import BaseCommand

from supergraph_messaging import outbox
from supergraph_messaging.conf import conf
from supergraph_messaging.pubsub import get_global_subscriber

logger = logging.getLogger("supergraph_messaging.worker")


class Command(BaseCommand):
    help = (
        "Listen to Redis Pub/Sub and run the handlers of every app's subscribers.py, "
        "including @redis_cache(invalidate_on=...) invalidations; with DELIVERY='durable', "
        "also relay the outbox. Stops on SIGTERM/SIGINT after finishing what it received."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        subscriber = get_global_subscriber()
        channels = subscriber.channels
        if not channels:
            self.stderr.write("No handlers registered: add subscribers.py modules to your apps.")
        self.stdout.write("Listening on: " + (", ".join(sorted(channels)) or "(nothing yet)"))
        if conf.durable:
            self.stdout.write("Relaying the outbox (DELIVERY='durable').")
        self.stdout.flush()
        asyncio.run(self._serve(subscriber))
        self.stdout.write("Stopped.")

    async def _serve(self, subscriber: Any) -> None:
        stop = asyncio.Event()
        if not conf.durable:
            await subscriber.serve(stop)
            return
        wake = asyncio.Event()

        async def nudged(data: Any) -> None:
            wake.set()

        subscriber.on(outbox.NUDGE_CHANNEL)(nudged)
        relay = asyncio.get_running_loop().create_task(outbox.relay_forever(stop, wake))
        try:
            await subscriber.serve(stop)
        finally:
            stop.set()
            relay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relay
