"""Deletes that failed while Redis was down, retried until Redis is back.

A ``CacheSync`` write or delete that fails during an outage would otherwise
leave the old value in place once Redis returns (with persistence on, it
survives a restart too) for the rest of its TTL. The keys are remembered,
bounded, and deleted by a daemon thread as soon as Redis answers again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from .cache import CacheManager
from .connection import REDIS_ERRORS

logger = logging.getLogger("supergraph_messaging.cache")

MAX_PENDING = 100_000
RETRY_INTERVAL = 0.5


class PendingDeletes:
    def __init__(self, limit: int = MAX_PENDING, interval: float = RETRY_INTERVAL) -> None:
        self.limit = limit
        self.interval = interval
        self._keys: set[str] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.overflowed = 0

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, keys: Iterable[str]) -> None:
        """Remember ``keys`` (as ``CacheManager()`` takes them) for deletion once Redis is back."""
        with self._lock:
            for key in keys:
                if len(self._keys) >= self.limit:
                    self.overflowed += 1
                    if self.overflowed == 1:
                        logger.error(
                            "%d cache keys are waiting to be deleted after a Redis outage; more are not "
                            "remembered and may stay stale until their TTL: invalidate their templates "
                            "by pattern once Redis is back.", self.limit)
                    continue
                self._keys.add(key)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="sgm-pending-deletes", daemon=True)
                self._thread.start()
        self._wake.set()

    def flush(self) -> bool:
        """Try once now; True when nothing is left."""
        with self._lock:
            batch = list(self._keys)
        if not batch:
            return True
        try:
            CacheManager().invalidate(*batch)
        except REDIS_ERRORS:
            return False
        with self._lock:
            self._keys.difference_update(batch)
            overflowed, self.overflowed = self.overflowed, 0
            left = len(self._keys)
        logger.info("Deleted %d cache key(s) whose write or deletion failed during the Redis outage.", len(batch))
        if overflowed:
            logger.error("%d further key(s) were not remembered during the outage and may be stale.", overflowed)
        return left == 0

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                if self.flush():
                    with self._lock:
                        if not self._keys:
                            self._thread = None
                            return
            except Exception:  # the repairer must outlive a bug in one round; the next retries
                logger.exception("Retrying failed cache deletions raised.")


pending_deletes = PendingDeletes()
