"""``register_model_events``: events from ``post_save`` and ``post_delete``, so that changes made outside the
API (the admin, the shell, jobs) publish too; quiet while a ViewSet publishes the same change itself.
"""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.models.signals import post_delete, post_save, pre_save

from supergraph_messaging.events import changes
from supergraph_messaging.events.changes import field_value
from supergraph_messaging.events.config import (
    EventConfig,
    EventRegistration,
    _is_suppressed,
    entity_label,
    register_events,
)
from supergraph_messaging.events.publishing import make_event, publish_on_commit
from supergraph_messaging.exceptions import MessagingError

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
