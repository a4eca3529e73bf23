"""The admin's "Messaging health" page: the last hour of what ``/metrics`` shows, as small charts.

Per channel the event rate and the consumer lag, dead letters, per key
template the cache hit ratio, WebSocket connections and closes per code
(:mod:`supergraph_messaging.operations.history` samples them). Rendered on
the server as inline SVG: no script, no CDN.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.safestring import mark_safe

from supergraph_messaging.conf import conf
from supergraph_messaging.operations import history, metrics
from supergraph_messaging.redis.client import get_redis_client
from supergraph_messaging.redis.errors import REDIS_ERRORS

TEMPLATE = "admin/supergraph_messaging/health.html"


def _chart(label: str, points: list[history.Point], unit: str, ceiling: float | None = None) -> dict[str, Any]:
    known = [v for _t, v in points if v is not None]
    svg = mark_safe(history.sparkline(points, ceiling=ceiling))  # only numbers go into it: nothing to escape
    return {"label": label, "svg": svg,
            "last": known[-1] if known else None, "peak": max(known) if known else None, "unit": unit}


def sections(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The page's charts, by section."""
    return [
        {"title": "Events per second, per channel", "charts": [
            _chart(c, history.rates(samples, "published", c), "/s") for c in history.keys(samples, "published")]},
        {"title": "Consumer lag, per channel (entries not read yet)", "charts": [
            _chart(c, history.values(samples, "lag", c), "") for c in history.keys(samples, "lag")]},
        {"title": "Dead letters, per channel", "charts": [
            _chart(c, history.values(samples, "dead", c), "") for c in history.keys(samples, "dead")]},
        {"title": "Cache hit ratio, per key template", "charts": [
            _chart(t, history.ratios(samples, t), "", ceiling=1.0)
            for t in sorted(set(history.keys(samples, "hits")) | set(history.keys(samples, "misses")))]},
        {"title": "WebSocket connections", "charts": [
            _chart("open", history.values(samples, "connections", ""), "")]},
        {"title": "WebSocket closes per second, per code", "charts": [
            _chart(code, history.rates(samples, "closes", code), "/s") for code in history.keys(samples, "closes")]},
    ]


def health_view(context: dict[str, Any], request: HttpRequest) -> HttpResponse:
    """``context``: the admin's (site, permissions, links). ``?service=``: another service's samples in this
    Redis (one of those listed; anything else draws this service's)."""
    samples: list[dict[str, Any]] = []
    services: list[str] = []
    service = conf.service_name
    if metrics.available():
        try:
            services = history.services()
            asked = request.GET.get("service", "")
            service = asked if asked in services else service
            samples = history.samples(service=service)
        except REDIS_ERRORS as exc:
            messages.error(request, f"Redis at {get_redis_client().masked_url} is unreachable: {exc}")
    span = samples[-1]["t"] - samples[0]["t"] if len(samples) > 1 else 0.0
    return TemplateResponse(request, TEMPLATE, {
        **context, "sections": sections(samples), "samples": len(samples), "minutes": span / 60,
        "interval": conf.health_sample_interval, "available": metrics.available(),
        "services": services, "service": service})
