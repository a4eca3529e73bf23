"""A circuit breaker so that a Redis outage costs each caller almost nothing.

Without it every cached call would pay a connect timeout while Redis is down.
With it, one call per interval probes Redis and the others skip it at once;
the log gets one warning when an outage starts and one line when it ends.
"""

from __future__ import annotations

import logging
import threading
import time

from .conf import conf

logger = logging.getLogger("supergraph_messaging.redis")


class CircuitBreaker:
    __slots__ = ("_lock", "failing", "failures", "name", "open_until")

    def __init__(self, name: str) -> None:
        self.name = name
        self.open_until = 0.0
        self.failing = False
        self.failures = 0
        self._lock = threading.Lock()

    def allow(self) -> bool:
        """True when Redis should be tried (closed, or one probe after the interval)."""
        until = self.open_until
        if not until:
            return True
        now = time.monotonic()
        if now < until:
            return False
        with self._lock:
            # Let exactly one caller probe; the others keep skipping.
            if self.open_until and now >= self.open_until:
                self.open_until = now + conf.breaker_interval
                return True
        return False

    def record_failure(self, exc: BaseException) -> None:
        with self._lock:
            self.failures += 1
            self.open_until = time.monotonic() + conf.breaker_interval
            if self.failing:
                return
            self.failing = True
        logger.warning(
            "Redis at %s is unreachable (%s); serving without the cache until it is back.",
            self.name,
            exc,
        )

    def record_success(self) -> None:
        if not self.failing:
            return
        with self._lock:
            if not self.failing:
                return
            self.failing = False
            self.open_until = 0.0
        logger.info("Redis at %s is reachable again.", self.name)
