"""DRF adapter: ``EventPublishingMixin`` over the ``perform_*`` hooks, and ``ModelViewSet``.

Payloads are the ViewSet serializer's representation, so an event never
carries a field the API does not expose; ``payload_fields`` narrows it.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any

from django.core import checks
from django.db import models, router, transaction
from rest_framework import serializers, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from supergraph_messaging.conf import conf
from supergraph_messaging.events import changes
from supergraph_messaging.events.config import (
    STANDARD_ACTIONS,
    EventConfig,
    EventRegistration,
    api_publishes,
    register_events,
    restore_model_events,
    suppress_model_events,
)
from supergraph_messaging.events.publishing import make_event, publish_on_commit


class EventPublishingMixin:
    """Publishes ``events`` (an :class:`EventConfig`) after each successful change.

    ``create``/``update``/``partial_update``/``destroy`` publish from the
    ``perform_*`` hooks; a custom ``@action`` named in ``publish`` publishes
    after a 2xx response. All of them after the transaction commits.
    """

    events: EventConfig | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        config = cls.__dict__.get("events")
        if isinstance(config, EventConfig):
            register_events(
                EventRegistration(config, f"{cls.__module__}.{cls.__qualname__}", lambda: _model_of(cls), viewset=cls)
            )

    def get_events(self) -> EventConfig | None:
        return self.events

    # -- helpers ------------------------------------------------------------
    def get_event_model(self) -> type[models.Model]:
        return _model_of(type(self))

    def _event_channel(self, action: str) -> str | None:
        config = self.get_events()
        return config.channel_for(action) if config is not None else None

    def publish_event(self, action: str, channel: str, data: Any, before: Any = None, instance: Any = None) -> None:
        config = self.get_events()
        assert config is not None
        model = self.get_event_model()
        event = make_event(config, action, channel, model._meta.label, data, before, changes.of(instance))
        publish_on_commit(channel, event, using=router.db_for_write(model))

    def _representation(self, instance: models.Model) -> dict[str, Any]:
        return dict(self.get_serializer(instance).data)  # type: ignore[attr-defined]

    def _payload_representation(self, serializer: serializers.BaseSerializer[Any], instance: Any) -> dict[str, Any]:
        """The payload fields of ``instance`` as ``serializer`` renders them.

        Reuses the serializer's already-built fields and renders only what the
        payload carries: this runs on every update, before the save.
        """
        fields = getattr(serializer, "fields", None)
        if fields is None:
            return self._representation(instance)
        config = self.get_events()
        wanted = None if config is None or config.payload_fields is None else set(config.payload_fields)
        out: dict[str, Any] = {}
        for name, field in fields.items():
            if field.write_only or (wanted is not None and name not in wanted):
                continue
            try:
                attribute = field.get_attribute(instance)
            except serializers.SkipField:
                continue
            out[name] = None if attribute is None else field.to_representation(attribute)
        return out

    # -- the perform_* hooks ------------------------------------------------
    def _change_and_event(self) -> contextlib.AbstractContextManager[Any]:
        """Durable delivery writes the change and its outbox row in one transaction.

        No savepoint inside an outer transaction (ATOMIC_REQUESTS): the two fail together with it
        anyway, and a savepoint costs two more round trips per request.
        """
        if not conf.durable:
            return contextlib.nullcontext()
        return transaction.atomic(using=router.db_for_write(self.get_event_model()), savepoint=False)

    def perform_create(self, serializer: serializers.BaseSerializer[Any]) -> None:
        channel = self._event_channel("create")
        if channel is None:
            super().perform_create(serializer)  # type: ignore[misc]
            return
        with self._change_and_event():
            with api_publishes(self.get_event_model(), "create"):
                super().perform_create(serializer)  # type: ignore[misc]
            self.publish_event("create", channel, serializer.data, instance=serializer.instance)

    def perform_update(self, serializer: serializers.BaseSerializer[Any]) -> None:
        channel = self._event_channel("update")
        if channel is None:
            super().perform_update(serializer)  # type: ignore[misc]
            return
        before = self._payload_representation(serializer, serializer.instance)
        with self._change_and_event():
            with api_publishes(self.get_event_model(), "update"):
                super().perform_update(serializer)  # type: ignore[misc]
            self.publish_event("update", channel, serializer.data, before, instance=serializer.instance)

    def perform_destroy(self, instance: models.Model) -> None:
        channel = self._event_channel("delete")
        if channel is None:
            super().perform_destroy(instance)  # type: ignore[misc]
            return
        data = self._representation(instance)  # captured before the row is gone
        with self._change_and_event():
            with api_publishes(self.get_event_model(), "delete"):
                super().perform_destroy(instance)  # type: ignore[misc]
            self.publish_event("delete", channel, data)

    # -- custom @actions ----------------------------------------------------
    def _custom_channel(self) -> str | None:
        return self._channel_of_custom(getattr(self, "action", None))

    def _channel_of_custom(self, action: str | None) -> str | None:
        if not action or action in STANDARD_ACTIONS or action in ("list", "retrieve", "destroy"):
            return None
        config = self.get_events()
        return config.publish.get(action) if config is not None else None

    def _is_detail(self) -> bool:
        method = getattr(self, str(getattr(self, "action", "")), None)
        return bool(getattr(method, "detail", False))

    def dispatch(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        """Durable delivery: a custom action that publishes runs in one transaction with its outbox row,
        which ``finalize_response`` writes (a crash between the two would commit a change without its event)."""
        action = getattr(self, "action_map", {}).get(request.method.lower())
        if not conf.durable or action is None or self._channel_of_custom(action) is None:
            return super().dispatch(request, *args, **kwargs)  # type: ignore[misc]
        with transaction.atomic(using=router.db_for_write(self.get_event_model()), savepoint=False):
            return super().dispatch(request, *args, **kwargs)  # type: ignore[misc]

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)  # type: ignore[misc]
        if self._custom_channel() is None:
            return
        self._event_before = self._representation(self.get_object()) if self._is_detail() else None  # type: ignore[attr-defined]
        self._event_token = suppress_model_events(self.get_event_model(), "save", "delete")

    def finalize_response(self, request: Request, response: Response, *args: Any, **kwargs: Any) -> Response:
        token: contextvars.Token[Any] | None = self.__dict__.pop("_event_token", None)
        if token is not None:
            restore_model_events(token)
        response = super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]
        channel = self._custom_channel()
        if channel is not None and token is not None and 200 <= response.status_code < 300:
            if self._is_detail():
                data = self._representation(self.get_object())  # type: ignore[attr-defined]
            else:
                data = response.data if isinstance(response.data, dict) else {}
            self.publish_event(str(self.action), channel, data, self.__dict__.pop("_event_before", None))  # type: ignore[attr-defined]
        return response

    # -- checks -------------------------------------------------------------
    @classmethod
    def check_events(cls) -> list[checks.CheckMessage]:
        config = cls.__dict__.get("events")
        if not isinstance(config, EventConfig):
            return []
        errors: list[checks.CheckMessage] = []
        name = f"{cls.__module__}.{cls.__qualname__}"
        available = {a for a in ("create", "update", "partial_update") if hasattr(cls, a)}
        if hasattr(cls, "destroy"):
            available.add("delete")
        extra = getattr(cls, "get_extra_actions", None)
        if extra is not None:
            available |= {a.__name__ for a in extra()}
        for action in config.publish:
            if action not in available:
                errors.append(checks.Error(
                    f"{name}.events publishes {action!r}, which is not an action of the ViewSet.",
                    hint="Known actions: " + ", ".join(sorted(available)),
                    obj=cls,
                    id="supergraph_messaging.E101",
                ))
        serializer_class = getattr(cls, "serializer_class", None)
        if config.payload_fields is not None and serializer_class is not None:
            try:
                visible = set(serializer_class().fields)
            except Exception as exc:  # a serializer needing context: report, do not crash `check`
                return [*errors, checks.Warning(f"{name}: could not inspect {serializer_class.__name__}: {exc}",
                                                obj=cls, id="supergraph_messaging.W101")]
            for field_name in config.payload_fields:
                if field_name not in visible:
                    errors.append(checks.Error(
                        f"{name}.events.payload_fields has {field_name!r}, which "
                        f"{serializer_class.__name__} does not expose.",
                        hint="Events carry only fields the API exposes.",
                        obj=cls,
                        id="supergraph_messaging.E102",
                    ))
        return errors


def _model_of(cls: type) -> type[models.Model]:
    queryset = getattr(cls, "queryset", None)
    if queryset is not None:
        return queryset.model  # type: ignore[no-any-return]
    model = getattr(cls, "model", None)
    if model is not None:
        return model  # type: ignore[no-any-return]
    serializer_class = getattr(cls, "serializer_class", None)
    meta = getattr(serializer_class, "Meta", None)
    if meta is not None and getattr(meta, "model", None) is not None:
        return meta.model  # type: ignore[no-any-return]
    raise AssertionError(
        f"'{cls.__name__}' publishes events but has no model: set `queryset`, `model` or a ModelSerializer."
    )


class ModelViewSet(EventPublishingMixin, viewsets.ModelViewSet[Any]):
    """DRF's ``ModelViewSet`` with event publishing.

    ``model = Camera`` alone is enough: the queryset is all
    rows and the serializer a ``ModelSerializer`` of every field.
    """

    model: type[models.Model] | None = None

    def get_queryset(self) -> Any:
        model = type(self).model
        if type(self).queryset is None and model is not None:
            return model._default_manager.all()
        return super().get_queryset()

    def get_serializer_class(self) -> type[serializers.BaseSerializer[Any]]:
        if self.serializer_class is None and self.model is not None:
            return _default_serializer(self.model)
        return super().get_serializer_class()


_serializers: dict[type[models.Model], type[serializers.ModelSerializer[Any]]] = {}


def _default_serializer(model: type[models.Model]) -> type[serializers.ModelSerializer[Any]]:
    serializer = _serializers.get(model)
    if serializer is None:
        meta = type("Meta", (), {"model": model, "fields": "__all__"})
        serializer = _serializers[model] = type(
            f"{model.__name__}Serializer", (serializers.ModelSerializer,), {"Meta": meta}
        )
    return serializer
