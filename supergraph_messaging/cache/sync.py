"""``CacheSync``: mirror a model's rows in the cache from model signals.

Each row is written after its transaction commits (never for a
rollback), the old key is removed when a key field changed, and the entry
is removed on delete. Deletes that fail while Redis is away are kept and
retried (:class:`PendingDeletes`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from django.core.exceptions import FieldDoesNotExist
from django.db import models, transaction
from django.db.models.signals import post_delete, post_save, pre_save

from supergraph_messaging.cache.invalidation import Registration, register
from supergraph_messaging.cache.manager import DEFAULT, TTL, CacheManager
from supergraph_messaging.cache.templates import KeyTemplate
from supergraph_messaging.events import changes
from supergraph_messaging.events.changes import field_value
from supergraph_messaging.redis.errors import REDIS_ERRORS

logger = logging.getLogger("supergraph_messaging.cache")

FieldSpec = Sequence[str] | Mapping[str, str | Callable[[Any], Any]]
_OLD_KEY_ATTR = "_supergraph_cachesync_old_keys"


class CacheSync:
    """Keep ``key`` (a template over model fields) filled with ``fields`` of each row.

    ``fields`` is a list of model field names, or a mapping of output name to
    a field name or a callable taking the instance (e.g. a related name).
    Saving an existing row costs one ``SELECT`` of the key fields, so that a
    changed key (a new MAC) removes the old entry.
    """

    def __init__(
        self,
        model: type[models.Model],
        key: str,
        fields: FieldSpec,
        ttl: TTL = DEFAULT,
        invalidate_on: Sequence[str] = (),
    ) -> None:
        self.model = model
        self.template = KeyTemplate(key)
        self.fields: dict[str, str | Callable[[Any], Any]] = (
            dict(fields) if isinstance(fields, Mapping) else {name: name for name in fields}
        )
        self.ttl = ttl
        self.cache = CacheManager()
        label = model._meta.label
        for root in self.template.roots:
            try:
                model._meta.get_field(root)
            except FieldDoesNotExist as exc:
                raise TypeError(f"CacheSync({label}, key={key!r}): {root!r} is not a field.") from exc
        self.disconnect()  # a CacheSync of the same model and key registered before is replaced
        uid = f"supergraph_cachesync:{label}:{key}"
        pre_save.connect(self._pre_save, sender=model, weak=False, dispatch_uid=uid)
        post_save.connect(self._post_save, sender=model, weak=False, dispatch_uid=uid)
        post_delete.connect(self._post_delete, sender=model, weak=False, dispatch_uid=uid)
        register(Registration(self.template, tuple(invalidate_on), label, kind="CacheSync", ttl=ttl))

    def __repr__(self) -> str:
        return f"CacheSync({self.model._meta.label}, key={self.template.template!r})"

    def disconnect(self) -> None:
        uid = f"supergraph_cachesync:{self.model._meta.label}:{self.template.template}"
        for signal in (pre_save, post_save, post_delete):
            signal.disconnect(sender=self.model, dispatch_uid=uid)

    def data(self, instance: models.Model) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, source in self.fields.items():
            out[name] = source(instance) if callable(source) else field_value(instance, source)
        return out

    def key(self, instance: models.Model) -> str:
        return self.template.fill({root: field_value(instance, root) for root in self.template.roots})

    def _pre_save(self, sender: Any, instance: models.Model, raw: bool = False, **kwargs: Any) -> None:
        changes.begin(instance)
        # Remember the stored key fields: if one changes, the old key must go.
        if instance._state.adding or instance.pk is None:
            return
        roots = list(self.template.roots)
        attnames = [self.model._meta.get_field(r).attname for r in roots]  # type: ignore[union-attr]
        using = kwargs.get("using") or instance._state.db
        row = self.model._default_manager.using(using).filter(pk=instance.pk).values(*attnames).first()
        if row is not None:
            old = self.template.fill(dict(zip(roots, (row[a] for a in attnames), strict=True)))
            instance.__dict__.setdefault(_OLD_KEY_ATTR, {})[self.template.template] = old

    def _post_save(self, sender: Any, instance: models.Model, using: str, **kwargs: Any) -> None:
        new_key, data, change = self.key(instance), self.data(instance), changes.of(instance)
        olds = instance.__dict__.get(_OLD_KEY_ATTR, {})
        old_key = olds.pop(self.template.template, None)

        def write() -> None:
            if old_key is not None and old_key != new_key:
                self._apply(old_key, lambda: self.cache.invalidate(old_key))
            self._apply(new_key, lambda: self.cache.set(new_key, data, ttl=self.ttl, version=change))

        transaction.on_commit(write, using=using)

    def _apply(self, key: str, operation: Callable[[], Any]) -> None:
        """Run a write of ``key`` behind the breaker; if it fails, ``key`` is deleted once Redis is back."""
        client = self.cache.client
        if client.breaker.allow():
            try:
                operation()
                return
            except REDIS_ERRORS as exc:
                client.breaker.record_failure(exc)
                reason = str(exc)
        else:
            reason = f"Redis at {client.masked_url} is unavailable"
        logger.error("CacheSync could not update %r (%s); it will be deleted once Redis is back.", key, reason)
        pending_deletes.add([key])

    def _post_delete(self, sender: Any, instance: models.Model, using: str, **kwargs: Any) -> None:
        key = self.key(instance)

        def delete() -> None:
            self._apply(key, lambda: self.cache.invalidate(key))

        transaction.on_commit(delete, using=using)


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
