"""Prometheus metrics (the ``[metrics]`` extra): what each process counted, and what Redis and the outbox hold.

Two kinds of series:

- **Per process**, counted in :mod:`supergraph_messaging.counters` on the hot
  paths and moved into ``prometheus_client`` metrics once a second (a daemon
  thread started when the app is ready) and at each scrape. In multi-process
  mode (``PROMETHEUS_MULTIPROC_DIR``: uvicorn or daphne workers beside
  ``messaging_listen``) they land in its memory-mapped files, so any
  process's ``/metrics`` sums them all. Gauges of a process (connections,
  subscriptions, the near cache's size, the breaker) sum over live processes.
- **Shared state**, read at scrape time by the process that answers: outbox
  rows pending and the oldest one's age, each stream's length, each group's
  pending entries and lag, dead letters, and the gateway's services.

The metrics live in ``prometheus_client``'s default registry, the one
``django-prometheus`` exports; ``PROMETHEUS_METRIC_NAMESPACE`` (its setting)
prefixes the names. Labels are templates, channels, entities, groups,
services and close codes, never keys or ids (:mod:`~supergraph_messaging.counters`
caps the label sets of a series).

``/metrics`` (:func:`metrics_view`, which the project mounts) is behind the
same access rule as ``/__schema`` (``SCHEMA_ACCESS``: staff, the service
token, or public); ``messaging_listen --metrics-port`` and
:func:`start_metrics_server` serve it unauthenticated on a port of its own,
for a scraper inside the network.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from supergraph_messaging import counters
from supergraph_messaging.conf import conf
from supergraph_messaging.delivery import outbox
from supergraph_messaging.gateway import remote
from supergraph_messaging.gateway.schema_views import may_read_schema
from supergraph_messaging.operations import streams
from supergraph_messaging.redis import client as redis_client
from supergraph_messaging.redis.errors import REDIS_ERRORS

logger = logging.getLogger("supergraph_messaging.metrics")

SYNC_INTERVAL = 1.0
#: Per-process counts: counters series -> (metric name, documentation, label names).
COUNTED: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "events_published": ("events_published", "Events that reached Redis (published, or appended by the relay).",
                         ("channel",)),
    "events_failed": ("events_failed", "Events that could not be published, by reason (failed, dropped).",
                      ("channel", "reason")),
    "outbox_enqueued": ("outbox_enqueued", "Events written to the outbox (durable delivery).", ("channel",)),
    "outbox_relayed": ("outbox_relayed", "Outbox rows relayed to their streams.", ("channel",)),
    "handler_errors": ("handler_errors", "Handler calls that raised or timed out.", ("channel", "handler")),
    "dead_lettered": ("dead_lettered", "Durable events moved to the dead-letter stream.", ("channel",)),
    "ws_deliveries": ("websocket_deliveries", "Events delivered to WebSocket subscriptions.", ()),
    "ws_frames_sent": ("websocket_frames_sent", "Frames sent to WebSocket clients (events, replies, pings).", ()),
    "ws_frames_dropped": ("websocket_frames_dropped", "Queued frames dropped when a connection was closed.", ()),
    "ws_closes": ("websocket_closes", "WebSocket connections closed, by close code and by whom.", ("code", "by")),
}
CACHE_FIELDS = ("hits", "misses", "fills", "lease_waits", "invalidations", "bypassed")
HANDLER_BUCKETS = counters.DURATION_BOUNDS


def available() -> bool:
    """Whether prometheus-client is installed (found, not imported: start-up and migrate stay as cheap)."""
    try:
        return importlib.util.find_spec("prometheus_client") is not None
    except ImportError:  # an import hook that refuses it (a sandboxed or frozen environment): not installed
        return False


def _name(name: str) -> str:
    namespace = getattr(settings, "PROMETHEUS_METRIC_NAMESPACE", "") or ""
    return f"{namespace}_supergraph_messaging_{name}" if namespace else f"supergraph_messaging_{name}"


class Exporter:
    """The process's ``prometheus_client`` metrics, and the moving of counts into them."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.counters: dict[str, Any] = {
            series: Counter(_name(name), doc, labels) for series, (name, doc, labels) in COUNTED.items()}
        self.cache = {field: Counter(_name(f"cache_{field}"), f"Cache {field.replace('_', ' ')}, per key template.",
                                     ("template",)) for field in CACHE_FIELDS}
        self.handler_seconds = Histogram(_name("handler_duration_seconds"), "Handler call durations.",
                                         ("channel", "handler"), buckets=HANDLER_BUCKETS)
        self.connections = Gauge(_name("websocket_connections"), "Open /subscribe connections.",
                                 multiprocess_mode="livesum")
        self.subscriptions = Gauge(_name("websocket_subscriptions"), "Live subscriptions, per entity.", ("entity",),
                                   multiprocess_mode="livesum")
        self.near_size = Gauge(_name("near_cache_size"), "Copies held by the near cache.",
                               multiprocess_mode="livesum")
        self.near_invalidations = Gauge(_name("near_cache_invalidations"),
                                        "Near-cache copies dropped by an invalidation since the process started.",
                                        multiprocess_mode="livesum")
        self.breaker_open = Gauge(_name("breaker_open"), "1 while the circuit breaker is open (Redis unreachable).",
                                  ("redis",), multiprocess_mode="max")
        self.breaker_trips = Gauge(_name("breaker_trips"), "Times the circuit breaker opened since the process "
                                   "started.", ("redis",), multiprocess_mode="livesum")
        self._exported: dict[tuple[Any, ...], int] = {}
        self._exported_histograms: dict[tuple[Any, ...], list[float]] = {}
        self._lock = threading.Lock()

    def sync(self) -> None:
        """Move what was counted since the last call into the metrics (thread-safe; cheap when idle)."""
        with self._lock:
            self._counts()
            for key, held in list(counters.histograms.items()):
                now = list(held)
                before = self._exported_histograms.get(key)
                self._exported_histograms[key] = now
                add_counts(self.handler_seconds.labels(*key[1:]),
                           now if before is None else [a - b for a, b in zip(now, before, strict=True)])
            self._gauges()

    def _counts(self) -> None:
        counts = counters.snapshot()
        for key, value in list(counts.items()):
            delta = value - self._exported.get(key, 0)
            if delta <= 0:
                continue
            self._exported[key] = value
            series = key[0]
            if series == "cache":
                if key[2] in self.cache:
                    self.cache[key[2]].labels(key[1]).inc(delta)
            elif series in self.counters:
                metric = self.counters[series]
                (metric.labels(*key[1:]) if len(key) > 1 else metric).inc(delta)
        self.connections.set(counts.get(("ws_connected",), 0) - counts.get(("ws_disconnected",), 0))
        for key, value in list(counts.items()):
            if key[0] == "ws_subscribed":
                self.subscriptions.labels(key[1]).set(value - counts.get(("ws_unsubscribed", key[1]), 0))

    def _gauges(self) -> None:
        from supergraph_messaging.cache import near

        caches = list(near._caches.values())
        self.near_size.set(sum(len(c) for c in caches))
        self.near_invalidations.set(sum(c.invalidations for c in caches))
        for client in list(redis_client._clients.values()):
            self.breaker_open.labels(client.masked_url).set(1 if client.breaker.failing else 0)
            self.breaker_trips.labels(client.masked_url).set(client.breaker.trips)


def add_counts(child: Any, counts: list[float]) -> None:
    """Add per-bucket counts and a sum (``counters.histograms``' layout) to a histogram's child."""
    buckets, total = getattr(child, "_buckets", None), getattr(child, "_sum", None)
    if buckets is None or total is None or len(buckets) != len(counts) - 1:
        raise TypeError("this prometheus-client keeps its histogram buckets otherwise")
    for bucket, added in zip(buckets, counts[:-1], strict=True):
        if added > 0:
            bucket.inc(added)
    if counts[-1] > 0:
        total.inc(counts[-1])


class SharedState:
    """A collector of what the outbox, the streams and the gateway hold, read when scraped."""

    def describe(self) -> list[Any]:
        """Nothing: without it, registering would call :meth:`collect` (the database, Redis) to learn the
        names, on whatever thread counted first (an event loop's)."""
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Any:
            return GaugeMetricFamily(_name(name), doc, labels=list(labels))

        if conf.durable:
            pending, oldest = outbox.backlog()
            yield _single(gauge("outbox_pending", "Outbox rows not relayed yet."), pending)
            yield _single(gauge("outbox_oldest_pending_seconds", "Age of the oldest unrelayed outbox row (0: none)."),
                          oldest or 0.0)
        length = gauge("stream_length", "Entries in a channel's stream.", ("channel",))
        dead = gauge("dead_letters", "Entries in a channel's dead-letter stream.", ("channel",))
        pending_entries = gauge("stream_pending", "Entries a consumer group received and has not acknowledged.",
                                ("channel", "group"))
        lag = gauge("stream_lag", "Entries a consumer group has not read yet.", ("channel", "group"))
        try:
            conn = redis_client.get_redis_client().redis
            for info in streams.describe(conn, streams.stream_keys(conn)):
                length.add_metric([info.channel], info.length)
                dead.add_metric([info.channel], info.dead_letters)
                for group in info.groups:
                    pending_entries.add_metric([info.channel, group.name], group.pending)
                    if group.lag is not None:
                        lag.add_metric([info.channel, group.name], group.lag)
        except REDIS_ERRORS as exc:
            logger.debug("Metrics: the streams could not be read: %s", exc)
        yield from (length, dead, pending_entries, lag)
        if conf.gateway_services:
            up = gauge("gateway_service_up", "1 while a service behind the gateway answers its /__schema.",
                       ("service",))
            for gateway in list(remote._gateways.values()):
                for name, service in gateway.services.items():
                    up.add_metric([name], 1 if service.available else 0)
            yield up


def _single(family: Any, value: float) -> Any:
    family.add_metric([], value)
    return family


_exporter: Exporter | None = None
_started: tuple[int, threading.Thread] | None = None
_start_lock = threading.Lock()


def exporter() -> Exporter:
    global _exporter
    with _start_lock:
        if _exporter is None:
            from prometheus_client import REGISTRY

            _exporter = Exporter()
            REGISTRY.register(SharedState())
    return _exporter


def start() -> None:
    """Start moving counts into the metrics once a second (once per process; again after a fork)."""
    global _started
    if not available():
        return
    with _start_lock:  # the thread builds the exporter: importing prometheus-client is not the caller's to wait for
        if _started is not None and _started[0] == os.getpid() and _started[1].is_alive():
            return
        thread = threading.Thread(target=_sync_forever, name="sgm-metrics", daemon=True)
        _started = (os.getpid(), thread)
        thread.start()


def _sync_forever() -> None:
    from supergraph_messaging.operations import history

    exporter()
    while True:
        time.sleep(SYNC_INTERVAL)
        try:
            exporter().sync()
            history.maybe_sample()  # the health page's: one process per HEALTH_SAMPLE_INTERVAL takes the slot
        except Exception:  # the exporter must never die; the next round retries
            logger.exception("Moving counts into the Prometheus metrics failed.")


def registry() -> Any:
    """What a scrape reads, this process's counts moved in first: every process's in multi-process mode."""
    from prometheus_client import REGISTRY, CollectorRegistry, multiprocess

    exporter().sync()
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    shared = CollectorRegistry()
    multiprocess.MultiProcessCollector(shared)  # type: ignore[no-untyped-call]
    shared.register(SharedState())
    return shared


def render() -> tuple[bytes, str]:
    """The exposition of every series (all processes' in multi-process mode)."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(registry()), CONTENT_TYPE_LATEST


def metrics_view(request: HttpRequest) -> HttpResponse:
    """``GET /metrics`` for the project's URLconf: ``path("metrics", metrics_view)``."""
    if not available():
        return JsonResponse({"detail": "Install supergraph-messaging[metrics] (prometheus-client)."}, status=501)
    if not may_read_schema(request):
        return JsonResponse({"detail": f"SCHEMA_ACCESS is {conf.schema_access!r}: /metrics needs what /__schema "
                                       "needs (a staff user's session or the service token)."}, status=403)
    body, content_type = render()
    return HttpResponse(body, content_type=content_type)


def start_metrics_server(port: int, host: str = "0.0.0.0") -> None:
    """Serve the exposition on ``host:port`` from a thread (no access control: for a network scrapers
    alone reach)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body, content_type = render()
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug("metrics: " + format, *args)

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="sgm-metrics-http", daemon=True).start()
