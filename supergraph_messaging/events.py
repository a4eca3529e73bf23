"""Events from data changes: ``EventConfig``, ``_meta``, publishing after commit.

This module knows nothing of DRF (that is ``viewsets``); it builds payloads
from model fields for ``register_model_events`` and publishes every event
with ``transaction.on_commit``, so a rolled-back change publishes nothing and
a subscriber can always read the committed row.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import models, transaction
from django.db.models.signals import post_delete, post_save, pre_save

from . import changes, outbox
from .conf import conf
from .connection import REDIS_ERRORS, get_redis_client
from .exceptions import MessagingError
from .fields import field_value
from .pipelined import PipelinedPublisher
from .signals import event_published

logger = logging.getLogger("supergraph_messaging.events")

#: Actions that the standard ViewSet hooks publish (``partial_update`` falls back to ``update``).
STANDARD_ACTIONS = ("create", "update", "partial_update", "delete")


@dataclass(frozen=True)
class EventConfig:
    """Which channel each action publishes to, and which fields the payload carries."""

    publish: Mapping[str, str]
    payload_fields: Sequence[str] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.publish, Mapping) or not self.publish:
            raise TypeError("EventConfig(publish=...) must be a non-empty dict of action -> channel.")
        for action, channel in self.publish.items():
            if not isinstance(channel, str) or not channel:
                raise TypeError(f"EventConfig: the channel for {action!r} must be a non-empty string.")
        if isinstance(self.payload_fields, str):
            raise TypeError("EventConfig(payload_fields=...) must be a list of field names, not a string.")

    def channel_for(self, action: str) -> str | None:
        channel = self.publish.get(action)
        if channel is None and action == "partial_update":
            channel = self.publish.get("update")
        if channel is None and action == "destroy":
            channel = self.publish.get("delete")
        return channel

    def restrict(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """Only ``payload_fields`` (when given) of what is visible."""
        if self.payload_fields is None:
            return dict(data)
        return {name: data[name] for name in self.payload_fields if name in data}


@dataclass
class EventRegistration:
    """What /__schema and the admin list: one entity's published events."""

    config: EventConfig
    source: str
    resolve_model: Callable[[], type[models.Model]]
    #: A ViewSet class that publishes these events (its checks run at ``manage.py check``).
    viewset: Any = None

    @property
    def entity(self) -> str:
        return entity_label(self.resolve_model())


registry: list[EventRegistration] = []


def register_events(registration: EventRegistration) -> None:
    """Add to :data:`registry`; the same source registering again replaces its entry."""
    registry[:] = [r for r in registry if r.source != registration.source]
    registry.append(registration)

#: Counters of this process, e.g. for monitoring. ``failed``: Redis was unreachable;
#: ``dropped``: ``PUBLISH_QUEUE_SIZE`` events were already waiting for Redis to confirm them.
counters = {"published": 0, "failed": 0, "dropped": 0}


def entity_label(model: type[models.Model]) -> str:
    return model._meta.label


def _utc_timestamp() -> str:
    """Now, in ISO 8601 with microseconds and ``Z`` (``datetime.now(UTC).isoformat()`` costs twice this)."""
    seconds, nanoseconds = divmod(time.time_ns(), 1_000_000_000)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(seconds))}.{nanoseconds // 1000:06d}Z"


def make_event(
    config: EventConfig,
    action: str,
    channel: str,
    entity: str,
    data: Mapping[str, Any],
    before: Mapping[str, Any] | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """``event_id``: the change's id when a save made one (:mod:`.changes`), so that a ``CacheSync``
    write for the same save is recognised by the invalidation this event causes."""
    payload = config.restrict(data)
    meta: dict[str, Any] = {
        "event": channel,
        "action": action,
        "entity": entity,
        "event_id": event_id or changes.new_id(),
        "ts": _utc_timestamp(),
    }
    if before is not None:
        meta["previous"] = {
            name: before[name] for name, value in payload.items() if name in before and before[name] != value
        }
    payload["_meta"] = meta
    return payload


def _event_id(payload: dict[str, Any]) -> Any:
    meta = payload.get("_meta")
    return meta.get("event_id") if isinstance(meta, dict) else None


def publish_now(channel: str, payload: dict[str, Any]) -> int | None:
    """Publish and wait for the reply; a failure is logged (naming the channel) and counted, never raised.

    Behind the client's circuit breaker: while Redis is known to be down, an
    event fails at once instead of costing every request a connect timeout.
    """
    client = get_redis_client()
    breaker = client.breaker
    if not breaker.allow():
        _failed(channel, payload, f"Redis at {client.masked_url} is unavailable", "failed")
        return None
    try:
        receivers = client.publish(channel, payload)
    except (TypeError, ValueError) as exc:  # NaN, an object JSON cannot carry: the publisher's bug
        _failed(channel, payload, str(exc), "failed")
        return None
    except REDIS_ERRORS as exc:
        breaker.record_failure(exc)
        _failed(channel, payload, str(exc), "failed")
        return None
    if breaker.failing:
        breaker.record_success()
    _published(channel, payload, receivers)
    return receivers


def _published(channel: str, payload: dict[str, Any], receivers: int) -> None:
    counters["published"] += 1
    event_published.send(sender=EventConfig, channel=channel, payload=payload, receivers=receivers)


def _failed(channel: str, payload: dict[str, Any], reason: str, kind: str) -> None:
    counters[kind] += 1
    verb = "Dropped" if kind == "dropped" else "Could not publish"
    logger.error("%s event %s on %r: %s", verb, _event_id(payload), channel, reason)


#: Publishes after commit without making the request wait (``PUBLISH_IN_BACKGROUND``).
publisher = PipelinedPublisher(_published, _failed)
atexit.register(publisher.flush)


def flush_events(timeout: float = 5.0) -> bool:
    """Wait until every event sent without waiting is confirmed by Redis (tests, scripts, shutdown).

    With ``DELIVERY = "durable"`` this also relays whatever the outbox holds.
    """
    if conf.durable:
        outbox.relay_all()
    return publisher.flush(timeout)


def publish_event(channel: str, payload: dict[str, Any], using: str | None = None) -> None:
    """Publish ``payload`` on ``channel`` as part of the current transaction.

    With ``DELIVERY = "durable"`` it is written to the outbox now and relayed
    after the commit (never lost, never for a rollback); otherwise it is
    published after the commit, at most once.
    """
    publish_on_commit(channel, payload, using)


def publish_on_commit(channel: str, payload: dict[str, Any], using: str | None = None) -> None:
    """Publish once the current transaction commits (at once outside a transaction).

    With ``DELIVERY = "durable"`` the event is written to the outbox in the
    current transaction instead, and relayed after the commit.
    """
    if conf.durable:
        outbox.enqueue(channel, payload, using)
    elif conf.publish_in_background:
        transaction.on_commit(lambda: publisher.publish(channel, payload), using=using)
    else:
        transaction.on_commit(lambda: publish_now(channel, payload), using=using)


# -- one event per change ---------------------------------------------------
_suppressed: contextvars.ContextVar[frozenset[tuple[type[models.Model], str]]] = contextvars.ContextVar(
    "supergraph_suppressed_model_events", default=frozenset()
)


def suppress_model_events(model: type[models.Model], *kinds: str) -> contextvars.Token[Any]:
    """Silence ``register_model_events`` of ``model`` ("save"/"delete") until :func:`restore_model_events`."""
    return _suppressed.set(_suppressed.get() | {(model, kind) for kind in kinds})


def restore_model_events(token: contextvars.Token[Any]) -> None:
    _suppressed.reset(token)


@contextlib.contextmanager
def api_publishes(model: type[models.Model], action: str) -> Iterator[None]:
    """While a ViewSet publishes ``action`` for ``model`` itself, model signals stay quiet."""
    token = suppress_model_events(model, "delete" if action in ("delete", "destroy") else "save")
    try:
        yield
    finally:
        restore_model_events(token)


def _is_suppressed(model: type[models.Model], kind: str) -> bool:
    suppressed = _suppressed.get()
    return bool(suppressed) and any(
        kind == k and issubclass(model, m) for m, k in suppressed
    )


# -- model signals ----------------------------------------------------------
_PREVIOUS_ATTR = "_supergraph_events_previous"


class ModelEvents:
    """Publishes ``config`` events from ``post_save``/``post_delete`` of one model."""

    def __init__(self, model: type[models.Model], config: EventConfig) -> None:
        if config.payload_fields is None:
            raise MessagingError(
                f"register_model_events({entity_label(model)}): payload_fields is required "
                "(without a serializer, only the fields you list are published)."
            )
        for name in config.payload_fields:
            model._meta.get_field(name)  # raises FieldDoesNotExist naming the field
        self.model = model
        self.config = config
        self.entity = entity_label(model)
        uid = f"supergraph_events:{self.entity}"
        pre_save.connect(self._pre_save, sender=model, weak=False, dispatch_uid=uid)
        post_save.connect(self._post_save, sender=model, weak=False, dispatch_uid=uid)
        post_delete.connect(self._post_delete, sender=model, weak=False, dispatch_uid=uid)
        self._uid = uid

    def disconnect(self) -> None:
        for signal in (pre_save, post_save, post_delete):
            signal.disconnect(sender=self.model, dispatch_uid=self._uid)

    def data(self, instance: models.Model) -> dict[str, Any]:
        assert self.config.payload_fields is not None
        return {name: field_value(instance, name) for name in self.config.payload_fields}

    def _pre_save(self, sender: Any, instance: models.Model, **kwargs: Any) -> None:
        changes.begin(instance)
        if instance._state.adding or instance.pk is None or not self.config.channel_for("update"):
            return
        if _is_suppressed(self.model, "save"):
            return
        assert self.config.payload_fields is not None
        attnames = {n: self.model._meta.get_field(n).attname for n in self.config.payload_fields}  # type: ignore[union-attr]
        using = kwargs.get("using") or instance._state.db
        row = self.model._default_manager.using(using).filter(pk=instance.pk).values(*attnames.values()).first()
        if row is not None:
            instance.__dict__[_PREVIOUS_ATTR] = {n: row[a] for n, a in attnames.items()}

    def _post_save(self, sender: Any, instance: models.Model, created: bool, using: str, **kwargs: Any) -> None:
        before = instance.__dict__.pop(_PREVIOUS_ATTR, None)
        if _is_suppressed(self.model, "save"):
            return
        action = "create" if created else "update"
        channel = self.config.channel_for(action)
        if channel is None:
            return
        data = self.data(instance)
        event = make_event(self.config, action, channel, self.entity, data, before if action == "update" else None,
                           changes.of(instance))
        publish_on_commit(channel, event, using=using)

    def _post_delete(self, sender: Any, instance: models.Model, using: str, **kwargs: Any) -> None:
        if _is_suppressed(self.model, "delete"):
            return
        channel = self.config.channel_for("delete")
        if channel is None:
            return
        event = make_event(self.config, "delete", channel, self.entity, self.data(instance))
        publish_on_commit(channel, event, using=using)


_model_events: dict[type[models.Model], ModelEvents] = {}


def register_model_events(model: type[models.Model], config: EventConfig) -> ModelEvents:
    """Publish ``config``'s events for changes made outside the API (admin, shell, jobs).

    ``bulk_create`` and ``QuerySet.update`` send no per-row signals, so they
    publish nothing (Django's rule): publish yourself after such bulk
    operations. ``QuerySet.delete`` does send ``post_delete`` per row.

    Each update of an existing row costs one extra ``SELECT`` of the payload
    fields (in ``pre_save``), which is what fills ``_meta.previous``.
    """
    existing = _model_events.pop(model, None)
    if existing is not None:
        existing.disconnect()
    handler = _model_events[model] = ModelEvents(model, config)
    register_events(EventRegistration(config, f"register_model_events({entity_label(model)})", lambda: model))
    return handler
