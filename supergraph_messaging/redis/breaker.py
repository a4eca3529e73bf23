"""A circuit breaker so that a Redis outage costs each caller almost nothing.

Without it every cached call would pay a connect timeout while Redis is down.
With it, the first failure opens the breaker; from then on every caller
skips Redis at once, and a background thread probes Redis every
``BREAKER_INTERVAL`` seconds on a connection of its own (a ``PING``; on a
Cluster, ``CLUSTER INFO``). The first probe that Redis answers closes the
breaker. No real operation is ever the probe: an event or a cache write is
not spent finding out whether Redis is back, and a quiet process notices
the recovery as soon as a caller would. The log gets one warning when an
outage starts and one line when it ends.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

import redis

from supergraph_messaging.conf import conf

logger = logging.getLogger("supergraph_messaging.redis")

#: What a failed probe raises: redis-py's errors, or the socket's own.
PROBE_ERRORS = (redis.exceptions.RedisError, OSError)


class CircuitBreaker:
    """Open while Redis is known to be down; ``probe`` (a call that raises unless Redis answers) closes it."""

    __slots__ = ("_lock", "_prober", "failing", "failures", "name", "probe", "trips")

    def __init__(self, name: str, probe: Callable[[], None]) -> None:
        self.name = name
        self.probe = probe
        self.failing = False
        self.failures = 0
        self.trips = 0  # times it opened
        self._lock = threading.Lock()
        self._prober: tuple[int, threading.Thread] | None = None

    def allow(self) -> bool:
        """True when Redis should be tried: the breaker is closed."""
        if not self.failing:
            return True
        self._ensure_prober()  # after a fork the parent's thread is not in this process
        return False

    def record_failure(self, exc: BaseException) -> None:
        with self._lock:
            self.failures += 1
            if self.failing:
                return
            self.failing = True
            self.trips += 1
        logger.warning(
            "Redis at %s is unreachable (%s); serving without the cache until it is back.",
            self.name,
            exc,
        )
        self._ensure_prober()

    def record_success(self) -> None:
        if not self.failing:
            return
        with self._lock:
            if not self.failing:
                return
            self.failing = False
        logger.info("Redis at %s is reachable again.", self.name)

    def _ensure_prober(self) -> None:
        prober = self._prober
        pid = os.getpid()
        if prober is not None and prober[0] == pid and prober[1].is_alive():
            return
        with self._lock:
            prober = self._prober
            if prober is not None and prober[0] == pid and prober[1].is_alive():
                return
            thread = threading.Thread(target=self._probe_until_answered, daemon=True,
                                      name=f"supergraph-breaker {self.name}")
            self._prober = pid, thread
            thread.start()

    def _probe_until_answered(self) -> None:
        """Runs on the prober thread until a probe succeeds (or a caller saw Redis answer first)."""
        stop = threading.Event()
        while self.failing:
            stop.wait(conf.breaker_interval)
            if not self.failing:
                return
            try:
                self.probe()
            except PROBE_ERRORS as exc:
                logger.debug("Redis at %s: probe failed (%s)", self.name, exc)
                continue
            self.record_success()
