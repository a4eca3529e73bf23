"""This process's operational counts: cheap enough for the hot paths, exported by ``operations.metrics``.

A count is an integer added in a dict under ``(series, *labels)``; a
duration adds one to its bucket of a fixed histogram (found by bisection, in
C) and to its sum. Neither takes a lock (two threads
racing on one count may lose an increment, which monitoring can afford),
allocates per call beyond the key, or knows Prometheus: a cache hit or a
Pub/Sub message pays a dict update, not a ``prometheus_client`` call (its
lock and, in multi-process mode, a write to a memory-mapped file).
:mod:`supergraph_messaging.operations.metrics` moves them into Prometheus
series once a second and at each scrape.

Label values are what the code names (templates, channels, entities, close
codes), never keys or ids; a series takes at most ``MAX_LABEL_SETS``
distinct label sets, later ones are counted under ``"(other)"``, so a
process publishing on per-object channel names cannot grow without bound.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from typing import Any

#: Distinct label sets a series takes before the rest count as ("(other)", ...).
MAX_LABEL_SETS = 2000
#: The upper bounds of the duration histograms, in seconds (a last bucket takes the rest).
DURATION_BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
OTHER = "(other)"

counts: dict[tuple[Any, ...], int] = {}
#: Called once, at the process's first count (``operations.metrics`` starts its exporting thread there: a
#: process that counts nothing, ``migrate`` or ``check``, starts none).
on_first_count: Callable[[], None] | None = None
#: Per key: the count in each bucket of DURATION_BOUNDS and the last one, then the sum (in seconds).
histograms: dict[tuple[Any, ...], list[float]] = {}
cells: dict[tuple[Any, ...], list[int]] = {}
_label_sets: dict[str, int] = {}


def _admit(key: tuple[Any, ...]) -> tuple[Any, ...]:
    """``key``, or its series with every label ``"(other)"`` once the series has MAX_LABEL_SETS sets."""
    global on_first_count
    if on_first_count is not None:
        hook, on_first_count = on_first_count, None
        hook()
    series = key[0]
    seen = _label_sets.get(series, 0)
    if seen >= MAX_LABEL_SETS:
        return (series, *(OTHER for _ in key[1:]))
    _label_sets[series] = seen + 1
    return key


def incr(key: tuple[Any, ...], amount: int = 1) -> None:
    """Add ``amount`` to the count ``key`` = ``(series, *labels)``."""
    value = counts.get(key)
    if value is None:
        key = _admit(key)
        value = counts.get(key, 0)
    counts[key] = value + amount


def observe(key: tuple[Any, ...], seconds: float) -> None:
    """Record a duration under ``key`` = ``(series, *labels)``: one more in its bucket, and in the sum.

    Counted here, not kept for the exporter to sort: moving 10,000 durations a second into
    prometheus-client one by one held the GIL long enough to triple a subscriber's p99."""
    held = histograms.get(key)
    if held is None:
        key = _admit(key)
        held = histograms.setdefault(key, [0.0] * (len(DURATION_BOUNDS) + 2))
    held[bisect_left(DURATION_BOUNDS, seconds)] += 1
    held[-1] += seconds


def cell(key: tuple[Any, ...]) -> list[int]:
    """A one-item list counted under ``key``, for the hottest paths: ``cell[0] += 1`` costs a tenth of an
    :func:`incr` call (under callgrind, 1,500 instructions a call: a tenth of a WebSocket delivery)."""
    found = cells.get(key)
    if found is None:
        found = cells[key] = [0]
    return found


def snapshot() -> dict[tuple[Any, ...], int]:
    """Every count, cells included."""
    out = dict(counts)
    for key, held in list(cells.items()):
        out[key] = out.get(key, 0) + held[0]
    return out
