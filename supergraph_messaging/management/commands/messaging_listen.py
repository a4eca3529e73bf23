"""``manage.py messaging_listen``: run the global subscriber as a worker (and the outbox relay when durable)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from supergraph_messaging.conf import conf
from supergraph_messaging.delivery import outbox
from supergraph_messaging.delivery.consumer_groups import GroupConsumer
from supergraph_messaging.delivery.subscriber import RedisSubscriber, get_global_subscriber
from supergraph_messaging.operations import metrics
from supergraph_messaging.operations.health import serve_worker_probes
from supergraph_messaging.redis.client import get_redis_client
from supergraph_messaging.redis.errors import REDIS_ERRORS

logger = logging.getLogger("supergraph_messaging.worker")

#: The worker's first wait for Redis: 0.1 s, doubling up to this.
MAX_BACKOFF = 5.0


async def wait_for_redis(stop: asyncio.Event) -> bool:
    """Until Redis answers a PING (False if ``stop`` is set first), backing off from 0.1 s to 5 s.

    Container platforms start processes in any order: a worker that starts before its Redis waits for it,
    with one WARNING when Redis does not answer and one INFO when it does, instead of exiting.
    """
    client = get_redis_client()
    delay, waited = 0.1, False
    while not stop.is_set():
        try:
            await client.aredis.ping()
        except REDIS_ERRORS as exc:
            if not waited:
                logger.warning("Redis at %s does not answer (%s); waiting for it before starting.",
                               client.masked_url, exc)
                waited = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, MAX_BACKOFF)
            continue
        if waited:
            logger.info("Redis at %s answers; starting.", client.masked_url)
        return True
    return False


class Command(BaseCommand):
    help = (
        "Listen to Redis Pub/Sub and run the handlers of every app's subscribers.py, "
        "including @redis_cache(invalidate_on=...) invalidations; with DELIVERY='durable', "
        "also relay the outbox. Stops on SIGTERM/SIGINT after finishing what it received."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--consumer", default=None,
                            help="This worker's name in its consumer groups (durable delivery; default: "
                                 "$SGM_CONSUMER, else the host name). Give each worker on one host its own.")
        parser.add_argument("--health-port", type=int, default=None,
                            help="Serve GET /__health/live and /__health/ready on this port (answered by the "
                                 "worker's event loop: a stuck loop fails its liveness probe).")
        parser.add_argument("--metrics-port", type=int, default=None,
                            help="Serve the Prometheus exposition on this port, without access control (for a "
                                 "scraper inside the network; needs the [metrics] extra).")
        parser.add_argument("--health-host", default="0.0.0.0",
                            help="The address --health-port and --metrics-port listen on (default: all, "
                                 "for Kubernetes).")
        roles = parser.add_mutually_exclusive_group()
        roles.add_argument("--no-relay", action="store_true",
                           help="Durable delivery: run the handlers only; another process relays the outbox.")
        roles.add_argument("--relay-only", action="store_true",
                           help="Durable delivery: relay the outbox only (one relay per database is active "
                                "at a time; others stand by).")

    def handle(self, *args: Any, **options: Any) -> None:
        if options.get("metrics_port") is not None:
            if not metrics.available():
                raise CommandError("--metrics-port needs prometheus-client: "
                                   "pip install 'supergraph-messaging[metrics]'.")
            metrics.start()
            metrics.start_metrics_server(options["metrics_port"], options.get("health_host") or "0.0.0.0")
        if options.get("relay_only"):
            if not conf.durable:
                raise CommandError("--relay-only needs DELIVERY = 'durable': there is no outbox to relay.")
            self.stdout.write("Relaying the outbox only.")
            self.stdout.flush()
            asyncio.run(self._serve(RedisSubscriber(), None, relay=True, health=self._health(options)))
            self.stdout.write("Stopped.")
            return
        subscriber = get_global_subscriber()
        channels = subscriber.channels
        if not channels:
            self.stderr.write("No handlers registered: add subscribers.py modules to your apps.")
        self.stdout.write("Listening on: " + (", ".join(sorted(channels)) or "(nothing yet)"))
        durable = None
        if conf.durable:
            durable = GroupConsumer(subscriber.take_exact_handlers(), consumer=options.get("consumer"))
            self.stdout.write(f"Durable (SERVICE_NAME={conf.service_name!r}): consumer groups for "
                              f"{', '.join(sorted(durable.handlers)) or 'nothing'}"
                              f"{'' if options.get('no_relay') else '; relaying the outbox'}.")
        self.stdout.flush()
        runner = asyncio.Runner()
        try:
            runner.run(self._serve(subscriber, durable, relay=conf.durable and not options.get("no_relay"),
                                   health=self._health(options)))
        finally:
            if durable is not None and durable.abandoned:
                # Joining the executor would wait for a hung sync handler for ever (SIGTERM did not end
                # in 45 s): its entry is pending, and redelivered to this consumer's next start.
                logger.warning("%d sync handler call(s) timed out or were stopped and may still be running; "
                               "exiting without waiting for them.", durable.abandoned)
                self.stdout.write("Stopped.")
                self.stdout.flush()
                sys.stderr.flush()
                logging.shutdown()
                os._exit(0)
            runner.close()
        self.stdout.write("Stopped.")

    @staticmethod
    def _health(options: dict[str, Any]) -> tuple[str, int] | None:
        port = options.get("health_port")
        return None if port is None else (options.get("health_host") or "0.0.0.0", port)

    async def _serve(self, subscriber: Any, durable: GroupConsumer | None, relay: bool,
                     health: tuple[str, int] | None = None) -> None:
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        probes = None
        if health is not None:  # before Redis answers: live says the worker runs, ready says it waits
            probes = await serve_worker_probes(*health, subscriber)
            logger.info("Health probes on http://%s:%d/__health/live and /__health/ready.", *health)
        try:
            await self._work(subscriber, durable, relay, stop)
        finally:
            if probes is not None:
                probes.close()
                await probes.wait_closed()

    async def _work(self, subscriber: Any, durable: GroupConsumer | None, relay: bool, stop: asyncio.Event) -> None:
        if not await wait_for_redis(stop):
            return
        relay_task = None
        if relay:
            wake = asyncio.Event()

            async def nudged(data: Any) -> None:
                wake.set()

            subscriber.on(outbox.NUDGE_CHANNEL)(nudged)
        if durable is not None:
            await durable.start()  # groups exist before the relay appends anything
        if relay:
            relay_task = asyncio.get_running_loop().create_task(outbox.relay_forever(stop, wake))
        try:
            await subscriber.serve(stop)
        finally:
            stop.set()
            if relay_task is not None:
                relay_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await relay_task
            if durable is not None:
                await durable.stop()
