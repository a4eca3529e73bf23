"""The last hour of the numbers ``/metrics`` shows, for the admin's "Messaging health" page.

Every ``HEALTH_SAMPLE_INTERVAL`` seconds one process (whichever takes the
slot's lock in Redis first; each process with the ``[metrics]`` extra tries
from its exporting thread) collects what ``/metrics`` serves (the same registry),
keeps the few series the page draws, and pushes them as one JSON sample to a
Redis list trimmed to an hour. In multi-process mode that exposition sums
every process of the host; without it, the sampling process's own counts
(the outbox, streams and dead letters are shared state either way).

Services that share a Redis (the gateway topology) keep apart: with
``SERVICE_NAME`` set, the slot and the samples are that service's, so each
service's admin draws its own processes, not whichever service sampled last.
The page can also draw another service's samples from the same Redis
(:func:`services` lists them, from a set each service adds its name to):
one admin for the operator, whichever service has one.

The page draws, per channel, the event rate and the consumer lag; dead
letters; per key template, the cache hit ratio; WebSocket connections and
closes per code: small inline SVG charts rendered here, no script.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import time
from typing import Any

import redis

from supergraph_messaging.conf import conf
from supergraph_messaging.operations import metrics
from supergraph_messaging.operations.streams import text
from supergraph_messaging.redis.client import get_redis_client
from supergraph_messaging.redis.errors import REDIS_ERRORS
from supergraph_messaging.redis.keys import full_key

SAMPLES_KEY = "sgm:health:samples"
SERVICES_KEY = "sgm:health:services"
SERVICES_LISTED = 50
SERVICE_NAME = re.compile(r"[\w.-]{1,100}")
LOCK_KEY = "sgm:health:sampling"
KEEP_SECONDS = 3600
#: Series the page draws: exposition name (without the prefix) -> (what the page calls it, the label kept).
DRAWN = {
    "events_published_total": ("published", "channel"),
    "stream_lag": ("lag", "channel"),
    "dead_letters": ("dead", "channel"),
    "cache_hits_total": ("hits", "template"),
    "cache_misses_total": ("misses", "template"),
    "websocket_connections": ("connections", ""),
    "websocket_closes_total": ("closes", "code"),
}


def redis_key(base: str, service: str | None = None) -> str:
    """``base`` (``SAMPLES_KEY`` or ``LOCK_KEY``) for ``service`` (this one by default): ``KEY_PREFIX`` + base
    [+ ``:SERVICE_NAME``]."""
    service = service or conf.service_name
    return full_key(f"{base}:{service}" if service else base)


def services(conn: redis.Redis | None = None) -> list[str]:
    """The services with samples in this Redis, from the set each sampling process adds its name to (at
    most SERVICES_LISTED; one whose samples expired, an hour after its last, is left out)."""
    conn = conn or get_redis_client().redis
    names = {text(raw) for raw in conn.srandmember(full_key(SERVICES_KEY), SERVICES_LISTED) or ()}
    names = {name for name in names if SERVICE_NAME.fullmatch(name)}
    pipe = conn.pipeline(transaction=False)
    for name in sorted(names):
        pipe.exists(redis_key(SAMPLES_KEY, name))
    found = {name for name, alive in zip(sorted(names), pipe.execute(), strict=True) if alive}
    return sorted(found | ({conf.service_name} if conf.service_name else set()))


def numbers() -> dict[str, dict[str, float]]:
    """The drawn series, as ``/metrics`` would answer now: {series: {label value: value}} (summed over
    the other labels)."""
    prefix = metrics._name("")
    out: dict[str, dict[str, float]] = {name: {} for name, _label in DRAWN.values()}
    for family in metrics.registry().collect():  # what render() writes out, without writing and parsing it
        for sample in family.samples:
            drawn = DRAWN.get(sample.name[len(prefix):]) if sample.name.startswith(prefix) else None
            if drawn is not None:
                series, label = drawn
                key = sample.labels.get(label, "") if label else ""
                out[series][key] = out[series].get(key, 0.0) + sample.value
    return out


def maybe_sample(conn: redis.Redis | None = None) -> bool:
    """Push a sample if this process takes this interval's slot; True when it did."""
    interval = conf.health_sample_interval
    if interval is None:
        return False
    conn = conn or get_redis_client().redis
    try:
        if not conn.set(redis_key(LOCK_KEY), os.getpid(), nx=True, px=max(1, int(interval * 900))):
            return False
        sample = json.dumps({"t": round(time.time(), 3), "n": numbers()})
        samples_key = redis_key(SAMPLES_KEY)
        pipe = conn.pipeline(transaction=False)
        pipe.lpush(samples_key, sample)
        pipe.ltrim(samples_key, 0, max(2, int(KEEP_SECONDS / interval)))  # an hour of them
        pipe.expire(samples_key, KEEP_SECONDS)  # a service that stopped sampling leaves within the hour
        if conf.service_name:
            pipe.sadd(full_key(SERVICES_KEY), conf.service_name)
            pipe.expire(full_key(SERVICES_KEY), KEEP_SECONDS)
        pipe.execute()
    except REDIS_ERRORS:
        return False
    return True


def samples(conn: redis.Redis | None = None, service: str | None = None) -> list[dict[str, Any]]:
    """The last hour's samples of ``service`` (this one by default), oldest first."""
    conn = conn or get_redis_client().redis
    raw: Any = conn.lrange(redis_key(SAMPLES_KEY, service), 0, -1)
    now = time.time()
    out = []
    for item in raw:
        try:
            sample = json.loads(item)
        except ValueError:
            continue
        if isinstance(sample, dict) and isinstance(sample.get("t"), (int, float)) and now - sample["t"] <= KEEP_SECONDS:
            out.append(sample)
    return sorted(out, key=lambda s: s["t"])


Point = tuple[float, float | None]


def values(history: list[dict[str, Any]], series: str, key: str) -> list[Point]:
    return [(s["t"], s["n"].get(series, {}).get(key)) for s in history]


def rates(history: list[dict[str, Any]], series: str, key: str) -> list[Point]:
    """Per second between consecutive samples (a restarted process's counts start again: never below 0)."""
    out: list[Point] = []
    for before, after in itertools.pairwise(history):
        a, b = before["n"].get(series, {}).get(key), after["n"].get(series, {}).get(key)
        seconds = after["t"] - before["t"]
        out.append((after["t"], None if a is None or b is None or seconds <= 0 else max(0.0, b - a) / seconds))
    return out


def ratios(history: list[dict[str, Any]], template: str) -> list[Point]:
    """The hit ratio between consecutive samples (None where the template was not read). A process that
    only ever hit has no misses series yet: its misses count as 0, and the ratio is 1, not unknown."""
    out: list[Point] = []
    for before, after in itertools.pairwise(history):
        counts = [[s["n"].get(series, {}).get(template) for series in ("hits", "misses")] for s in (before, after)]
        if counts[0] == [None, None] or counts[1] == [None, None]:
            out.append((after["t"], None))
            continue
        hits, misses = (max(0.0, (b or 0.0) - (a or 0.0)) for a, b in zip(counts[0], counts[1], strict=True))
        out.append((after["t"], None if hits + misses == 0 else hits / (hits + misses)))
    return out


def keys(history: list[dict[str, Any]], series: str) -> list[str]:
    return sorted({key for s in history for key in s["n"].get(series, {})})


def sparkline(points: list[Point], width: int = 260, height: int = 48, ceiling: float | None = None) -> str:
    """An inline SVG line of ``points`` (gaps where a value is None), scaled to its own maximum (or
    ``ceiling``); only numbers go into it."""
    known = [v for _t, v in points if v is not None]
    if len(points) < 2 or not known:
        return f'<svg class="chart empty" width="{width}" height="{height}" role="img"></svg>'
    t0, t1 = points[0][0], points[-1][0]
    top = ceiling if ceiling is not None else max(known) or 1.0
    span = (t1 - t0) or 1.0
    runs: list[list[str]] = [[]]
    for t, v in points:
        if v is None:
            runs.append([])
            continue
        x = (t - t0) / span * (width - 2) + 1
        y = height - 4 - (v / top) * (height - 8)  # 4 px clear of each edge
        runs[-1].append(f"{x:.1f},{y:.1f}")
    lines = "".join(f'<polyline points="{" ".join(r)}" fill="none" stroke="#417690" stroke-width="1.5"/>'
                    for r in runs if len(r) >= 2)
    dots = "".join(f'<circle cx="{r[0].split(",")[0]}" cy="{r[0].split(",")[1]}" r="1.5" fill="#417690"/>'
                   for r in runs if len(r) == 1)
    return (f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">'
            f'<rect width="{width}" height="{height}" fill="#f8f8f8"/>{lines}{dots}</svg>')
