"""Per-template cache statistics, counted in-process and flushed to Redis in batches.

Counting must not cost a round trip per hit, so a hit adds one to
:mod:`supergraph_messaging.counters` (series ``"cache"``, labels template and
field; Prometheus exports it from there), and a daemon thread adds what is
new since its last flush to one Redis hash every few seconds. The admin
reads that hash, which sums every process.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from supergraph_messaging import counters
from supergraph_messaging.redis.client import get_redis_client
from supergraph_messaging.redis.errors import REDIS_ERRORS
from supergraph_messaging.redis.keys import full_key

logger = logging.getLogger("supergraph_messaging.stats")

STATS_KEY = "supergraph_messaging:stats"
FLUSH_INTERVAL = 5.0
FIELDS = ("hits", "misses", "fills", "lease_waits", "invalidations", "bypassed")

#: What the Redis hash has been given of each count (a failed flush leaves it, so the next one retries).
_flushed: dict[tuple[Any, ...], int] = {}
_lock = threading.Lock()
_flusher: threading.Thread | None = None


def incr(template: str, field: str, amount: int = 1) -> None:
    counters.incr(("cache", template, field), amount)
    if _flusher is None:
        _start_flusher()


def _pending() -> dict[tuple[Any, ...], int]:
    out = {}
    for key, value in list(counters.counts.items()):
        if key[0] == "cache" and value != _flushed.get(key, 0):
            out[key] = value - _flushed.get(key, 0)
    return out


def local() -> dict[str, dict[str, int]]:
    """This process's counts since the last flush (for tests and debugging)."""
    out: dict[str, dict[str, int]] = {}
    for (_series, template, field), value in _pending().items():
        out.setdefault(template, dict.fromkeys(FIELDS, 0))[field] += value
    return out


def flush() -> None:
    with _lock:
        batch = _pending()
        if not batch:
            return
        try:
            pipe = get_redis_client().redis.pipeline(transaction=False)
            for (_series, template, field), value in batch.items():
                pipe.hincrby(full_key(STATS_KEY), f"{template}|{field}", value)
            pipe.execute()
        except REDIS_ERRORS as exc:
            logger.debug("Could not flush cache stats: %s", exc)  # kept for the next flush
            return
        for key, value in batch.items():
            _flushed[key] = _flushed.get(key, 0) + value


def read() -> dict[str, dict[str, int]]:
    """Totals of every process (flushed counts plus this process's pending ones)."""
    flush()
    raw = get_redis_client().redis.hgetall(full_key(STATS_KEY))
    out: dict[str, dict[str, int]] = {}
    for name, value in raw.items():
        text = name.decode() if isinstance(name, bytes) else name
        template, _, field = text.rpartition("|")
        out.setdefault(template, dict.fromkeys(FIELDS, 0))[field] = int(value)
    return out


def _loop() -> None:
    stop = threading.Event()
    while not stop.wait(FLUSH_INTERVAL):
        try:
            flush()
        except Exception:  # the flusher must never die; the next round retries
            logger.exception("Cache stats flush failed.")


def _start_flusher() -> None:
    global _flusher
    with _lock:
        if _flusher is None:
            _flusher = threading.Thread(target=_loop, name="sgm-stats-flush", daemon=True)
            _flusher.start()
