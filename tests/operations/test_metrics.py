"""Prometheus metrics from real processes: daphne and a messaging_listen worker in multi-process mode."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import wait_for
from tests.operations.services import subscribed, web_and_worker
from tests.support.redis_server import RedisServer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.topology("single")]
TOKEN = "metrics-test-service-token-0123456789abcdef"
P = "supergraph_messaging_"

#: Every series /metrics lists on a durable service that served a cache, events, a handler and a WebSocket.
SERIES = [
    "cache_hits_total", "cache_misses_total", "cache_fills_total", "cache_invalidations_total",
    "near_cache_size", "near_cache_invalidations", "breaker_open", "breaker_trips",
    "events_published_total", "outbox_enqueued_total", "outbox_relayed_total", "outbox_pending",
    "outbox_oldest_pending_seconds", "stream_length", "stream_pending", "stream_lag", "dead_letters",
    "handler_duration_seconds_bucket", "handler_duration_seconds_count",
    "websocket_connections", "websocket_subscriptions", "websocket_deliveries_total",
    "websocket_frames_sent_total",
]


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = httpx.get(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Service {TOKEN}"})
    assert answer.status_code == 200, answer.text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(answer.text) for s in family.samples}


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == P + name and dict(ls).items() >= labels.items())


async def test_counts_of_a_web_process_and_a_worker_add_up_exactly(redis_server: RedisServer, redis_conn: Any,
                                                                 tmp_path: Path) -> None:
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "SGM_SERVICE_TOKEN": TOKEN}
    with web_and_worker(redis_server.port, redis_conn, **env) as (server, _worker):
        base = f"http://127.0.0.1:{server.port}"
        async with subscribed(server, "ChaosRows") as ws:
            async with httpx.AsyncClient(base_url=base) as http:
                for _ in range(10):  # 10 API writes, each read back through the cache
                    assert (await http.post("/chaos/rows/7/")).status_code == 200
                    assert (await http.get("/chaos/rows/7/")).status_code == 200
            got = []
            while len(got) < 10:
                message = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if message["type"] == "next":
                    got.append(message)
            wait_for(lambda: redis_conn.llen("chaos:order") == 10, timeout=15)  # the worker's handler, 10 times
            async with httpx.AsyncClient(base_url=base) as http:
                for _ in range(2):  # quiet now: the second read is a hit
                    assert (await http.get("/chaos/rows/7/")).status_code == 200
            await asyncio.sleep(2.5)  # each process moves its counts into the shared files once a second
            samples = scrape(server.port)
            names = {name for name, _labels in samples}
            assert [s for s in SERIES if P + s not in names] == []
            assert value(samples, "outbox_enqueued_total", channel="chaos.rows") == 10  # daphne
            assert value(samples, "events_published_total", channel="chaos.rows") == 10  # the worker's relay
            effect = "tests.testapp.subscribers.chaos_effect"
            assert value(samples, "handler_duration_seconds_count", channel="chaos.rows", handler=effect) == 10
            assert value(samples, "handler_errors_total", channel="chaos.rows") == 0
            assert value(samples, "websocket_deliveries_total") == 10  # daphne
            assert value(samples, "websocket_connections") == 1
            assert value(samples, "websocket_subscriptions", entity="ChaosRows") == 1
            assert value(samples, "cache_fills_total", template="chaos:row:{row}") >= 1
            assert value(samples, "cache_hits_total", template="chaos:row:{row}") >= 1
            assert value(samples, "stream_length", channel="chaos.rows") == 10
            assert value(samples, "outbox_pending") == 0
        print(f"\n/metrics after 10 API writes and 10 WebSocket deliveries (daphne + messaging_listen): "
              f"outbox_enqueued 10, events_published 10, handler calls 10, deliveries 10; {len(samples)} samples")
        started = time.monotonic()
        wait_for(lambda: value(scrape(server.port), "websocket_connections") == 0, timeout=5)
        assert value(scrape(server.port), "websocket_closes_total", by="client") == 1
        print(f"connections back to 0 {time.monotonic() - started:.1f} s after the client left")
        assert httpx.get(f"{base}/metrics").status_code == 403  # SCHEMA_ACCESS: staff or the service token


def test_a_gateways_services_are_listed_up_or_down_and_metrics_need_schema_access(redis_conn: Any) -> None:
    from django.contrib.auth.models import User
    from django.test import Client, override_settings

    services = {"nowhere": "http://127.0.0.1:9"}
    with override_settings(SUPERGRAPH_MESSAGING={"GATEWAY_SERVICES": services, "GATEWAY_TIMEOUT": 0.2}):
        assert Client().get("/__health/ready").status_code == 503  # the gateway has read its services once
        assert Client().get("/metrics").status_code == 403
        staff = Client()
        staff.force_login(User.objects.create_user("ops", password="pw", is_staff=True))
        answer = staff.get("/metrics")
    assert answer.status_code == 200
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(answer.content.decode()) for s in family.samples}
    assert samples[(P + "gateway_service_up", (("service", "nowhere"),))] == 0


def test_a_series_takes_a_bounded_number_of_label_sets() -> None:
    from supergraph_messaging import counters

    before = dict(counters.counts)
    try:
        for n in range(counters.MAX_LABEL_SETS + 50):
            counters.incr(("bounded_test", f"camera.{n}"))  # a channel per object: not a label per object
        labels = {key[1] for key in counters.counts if key[0] == "bounded_test"}
        assert len(labels) == counters.MAX_LABEL_SETS + 1  # the first 2,000, then "(other)"
        assert counters.counts[("bounded_test", counters.OTHER)] == 50
    finally:
        counters.counts.clear()
        counters.counts.update(before)
        counters._label_sets.pop("bounded_test", None)


def test_the_health_history_is_one_sample_per_interval_and_draws_only_numbers(redis_conn: Any) -> None:
    from django.test import override_settings

    from supergraph_messaging.operations import history

    with override_settings(SUPERGRAPH_MESSAGING={"HEALTH_SAMPLE_INTERVAL": 60, "SERVICE_NAME": "cams"}):
        redis_conn.delete(history.redis_key(history.SAMPLES_KEY), history.redis_key(history.LOCK_KEY))
        assert history.maybe_sample() is True
        assert history.maybe_sample() is False  # this interval's slot is taken (by any process of the service)
        (sample,) = history.samples()
        assert history.samples(service="other") == []  # services sharing a Redis keep their samples apart
    with override_settings(SUPERGRAPH_MESSAGING={"HEALTH_SAMPLE_INTERVAL": 60, "SERVICE_NAME": "doors"}):
        assert {"cams", "doors"} <= set(history.services())  # cams from the set it joined; doors is this one
        redis_conn.delete(history.redis_key(history.SAMPLES_KEY, "cams"))
        assert "cams" not in history.services()  # its samples gone (expired an hour after its last): not listed
    assert set(sample["n"]) == {"published", "lag", "dead", "hits", "misses", "connections", "closes"}
    fake = [{"t": 0.0, "n": {"published": {"c": 10.0}}}, {"t": 10.0, "n": {"published": {"c": 30.0}}},
            {"t": 20.0, "n": {"published": {"c": 5.0}}}, {"t": 30.0, "n": {}}]  # a restart, then nothing
    assert history.rates(fake, "published", "c") == [(10.0, 2.0), (20.0, 0.0), (30.0, None)]
    svg = history.sparkline(history.rates(fake, "published", "c"))
    assert svg.startswith("<svg") and "<script" not in svg and "polyline" in svg
    assert "empty" in history.sparkline([(0.0, None)])


def test_durations_counted_per_bucket_export_exactly_as_one_by_one() -> None:
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from supergraph_messaging import counters
    from supergraph_messaging.operations.metrics import HANDLER_BUCKETS, add_counts

    registry = CollectorRegistry()
    one_by_one = Histogram("one", "one", buckets=HANDLER_BUCKETS, registry=registry)
    in_bulk = Histogram("bulk", "bulk", buckets=HANDLER_BUCKETS, registry=registry)
    key = ("handler", "test.durations", "t.handler")
    try:
        for d in [0.0001, 0.0005, 0.0005, 0.003, 0.01, 0.7, 12.0, 31.0, 0.0, 30.0]:  # 0.0005, 30.0: on a bound
            one_by_one.observe(d)
            counters.observe(key, d)
        add_counts(in_bulk, counters.histograms[key])
    finally:
        counters.histograms.pop(key, None)
    lines = generate_latest(registry).decode().splitlines()

    def series(name: str) -> list[str]:
        return [line.split(" ", 1)[1] for line in lines if line.startswith(name + "_") and "_created" not in line]

    assert series("one") == series("bulk")


def test_the_hit_ratio_of_a_template_that_never_missed_is_1_not_unknown() -> None:
    from supergraph_messaging.operations import history

    t = "camera:mac:{mac_address}"
    samples = [{"t": 0.0, "n": {}}, {"t": 10.0, "n": {"hits": {t: 5.0}}}, {"t": 20.0, "n": {"hits": {t: 9.0}}},
               {"t": 30.0, "n": {"hits": {t: 9.0}, "misses": {t: 4.0}}}, {"t": 40.0, "n": {"hits": {t: 9.0},
                                                                                          "misses": {t: 4.0}}}]
    assert history.ratios(samples, t) == [(10.0, None), (20.0, 1.0), (30.0, 0.0), (40.0, None)]
