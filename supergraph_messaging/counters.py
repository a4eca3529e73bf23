"""This process's operational counts: cheap enough for the hot paths, exported by ``operations.metrics``.

A count is an integer added in a dict under ``(series, *labels)``; a
duration is a float appended to a list. Neither takes a lock (two threads
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

from collections.abc import Callable
from typing import Any

#: Distinct label sets a series takes before the rest count as ("(other)", ...).
MAX_LABEL_SETS = 2000
#: Durations held per series between two exports (beyond: dropped, and counted in ``dropped``).
MAX_PENDING_OBSERVATIONS = 100_000
OTHER = "(other)"

counts: dict[tuple[Any, ...], int] = {}
#: Called once, at the process's first count (``operations.metrics`` starts its exporting thread there: a
#: process that counts nothing, ``migrate`` or ``check``, starts none).
on_first_count: Callable[[], None] | None = None
observations: dict[tuple[Any, ...], list[float]] = {}
cells: dict[tuple[Any, ...], list[int]] = {}
_label_sets: dict[str, int] = {}
dropped = 0


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
    """Record a duration under ``key`` = ``(series, *labels)`` (a histogram once exported)."""
    pending = observations.get(key)
    if pending is None:
        key = _admit(key)
        pending = observations.setdefault(key, [])
    if len(pending) < MAX_PENDING_OBSERVATIONS:
        pending.append(seconds)
    else:
        global dropped
        dropped += 1


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


def take_observations() -> dict[tuple[Any, ...], list[float]]:
    """The durations recorded since the last call (the exporter's; each is handed over once)."""
    taken = {}
    for key in list(observations):
        pending = observations.get(key)
        if pending:
            observations[key] = []
            taken[key] = pending
    return taken
