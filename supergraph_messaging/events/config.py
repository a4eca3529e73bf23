"""What a project publishes: ``EventConfig`` (channels per action, payload fields), the registry of every
configuration (for checks, ``/__schema`` and AsyncAPI), and the suppression that keeps a change to one event
when a ViewSet and model signals both publish it.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import models

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
def entity_label(model: type[models.Model]) -> str:
    return model._meta.label

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
