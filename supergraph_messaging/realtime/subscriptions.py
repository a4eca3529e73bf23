"""Declarative WebSocket subscriptions: ``Subscription`` classes, filters, a registry.

The consumer asks this module whether a subscribe request is valid and
allowed (:meth:`Subscription.authorize`, :meth:`Subscription.recheck`: an
entity of another service overrides both), and the hub asks it whether an
event matches. The only Channels here is ``database_sync_to_async``, which
runs the permission hooks off the event loop.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable
from typing import Any, ClassVar

from channels.db import database_sync_to_async

from supergraph_messaging.realtime.filters import JSON_TYPES, OPERATORS, Condition, Refused, parse

logger = logging.getLogger("supergraph_messaging.ws")

#: DRF's permission classes that decide from the (already loaded) user alone, never the database.
USER_ONLY_PERMISSIONS = frozenset({"AllowAny", "IsAuthenticated", "IsAdminUser", "IsAuthenticatedOrReadOnly"})


def _decides_on_loop(cls: type[Subscription]) -> bool:
    """Whether :meth:`Subscription.access` of ``cls`` reads nothing but the user (so needs no thread)."""
    return (cls.get_server_filters.__func__ is Subscription.get_server_filters.__func__  # type: ignore[attr-defined]
            and cls.has_permission.__func__ is Subscription.has_permission.__func__  # type: ignore[attr-defined]
            and all(getattr(p, "__module__", "") == "rest_framework.permissions"
                    and p.__name__ in USER_ONLY_PERMISSIONS for p in cls.permission_classes))


class Subscription:
    """Subclass to expose a stream of events over ``/subscribe``.

    ``filters`` maps event fields to the operators clients may use;
    :meth:`get_server_filters` adds conditions the client cannot widen
    (a tenant, the user's own rows): they are AND-ed with the client's.
    """

    entity: ClassVar[str] = ""
    channels: ClassVar[list[str]] = []
    filters: ClassVar[dict[str, list[str]]] = {}
    permission_classes: ClassVar[list[Any]] = []
    description: ClassVar[str] = ""
    #: Optional field types (``{"camera_id": int, "event_type": str}``): a client filter value
    #: that can never match the declared type is refused at subscribe instead of matching nothing.
    field_types: ClassVar[dict[str, type | tuple[type, ...]]] = {}
    #: The event fields a client may ask for with ``fields`` (None: any name, up to ``WS_MAX_FIELDS``).
    fields: ClassVar[list[str] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("entity"):
            # Keyed by where the class is defined: a re-imported module replaces, never piles up.
            registry[:] = [c for c in registry if (c.__module__, c.__qualname__) != (cls.__module__, cls.__qualname__)]
            registry.append(cls)

    # -- hooks --------------------------------------------------------------
    @classmethod
    def get_server_filters(cls, user: Any) -> dict[str, Any]:
        """Filters (``field__op: value``) imposed by the server for ``user``."""
        return {}

    @classmethod
    def has_permission(cls, user: Any) -> bool:
        """DRF-style permission classes, checked against the connection's user.

        A permission receives a minimal request-like object with ``user``
        (and ``method`` "GET"), and ``None`` as the view.
        """
        request = _WsRequest(user)
        return all(permission().has_permission(request, None) for permission in cls.permission_classes)

    @classmethod
    def access(cls, user: Any) -> dict[str, Any] | None:
        """The server filters for ``user``, or None when not allowed: both decisions in one thread hop."""
        return cls.get_server_filters(user) if cls.has_permission(user) else None

    @classmethod
    async def authorize(cls, user: Any, filters: Any) -> dict[str, Any]:
        """The server filters ``user`` subscribes with (``filters``: the client's), or :class:`Refused`.

        Here, :meth:`access` on a thread (permission classes may read the database), unless it cannot:
        the hooks are the base ones and every permission class decides from the user alone
        (:data:`USER_ONLY_PERMISSIONS`). Every subscribe of a process shares that one thread, and a
        reconnect storm of 10,000 subscribes queued behind it.
        """
        server: dict[str, Any] | None = (cls.access(user) if _decides_on_loop(cls)
                                         else await database_sync_to_async(cls.access)(user))
        if server is None:
            raise Refused(f"Not allowed to subscribe to {cls.entity}.")
        return server

    @classmethod
    def grant(cls, filters: Any, server: dict[str, Any]) -> Any:
        """What :meth:`recheck` needs to remember of a subscribe (the client's ``filters``, the ``server``
        filters it got), kept by the connection while the subscription lasts; None: nothing (here)."""
        return None

    @classmethod
    async def recheck(cls, user: Any, grant: Any, user_changed: bool) -> Refused | None:
        """Whether a subscription (``grant``: what :meth:`grant` kept) may go on for ``user``: None, or why
        it ends.

        Here, only when the user changed (a logout, a deactivation): the
        permission classes are asked again; an error in them ends it.
        """
        if not user_changed:
            return None
        try:
            allowed = await database_sync_to_async(cls.has_permission)(user)
        except Exception:
            logger.exception("A permission check of %s raised while re-checking a subscription.", cls.entity)
            allowed = False
        return None if allowed else Refused(f"Access to {cls.entity} ended (logged out or deactivated).")

    @classmethod
    def requires_auth(cls) -> bool:
        from django.contrib.auth.models import AnonymousUser

        return bool(cls.permission_classes) and not cls.has_permission(AnonymousUser())

    # -- filters ------------------------------------------------------------
    @classmethod
    def parse_filters(cls, raw: Any, max_in_values: int, declared: bool = True) -> list[Condition]:
        """A client's filters (``declared``: only as :attr:`filters` and :attr:`field_types` allow them), or
        a server's (any field and operator), as conditions; :class:`FilterError` says what is wrong."""
        return parse(raw, cls.entity, cls.filters if declared else None, cls.field_types if declared else {},
                     max_in_values)

    @classmethod
    def check(cls) -> list[str]:
        problems = []
        if not cls.channels:
            problems.append(f"{cls.__qualname__} ({cls.entity}) lists no channels.")
        for field, ops in cls.filters.items():
            if not isinstance(ops, (list, tuple)):
                problems.append(
                    f"{cls.__qualname__}.filters[{field!r}] must be a list of operators, e.g. [{ops!r}]; "
                    f"got {type(ops).__name__} {ops!r}."
                )
                continue
            for op in ops:
                if op not in OPERATORS:
                    problems.append(f"{cls.__qualname__}.filters[{field!r}] has unknown operator {op!r}.")
        for field, declared in cls.field_types.items():
            kinds = declared if isinstance(declared, tuple) else (declared,)
            if field not in cls.filters:
                problems.append(f"{cls.__qualname__}.field_types[{field!r}] names a field that filters does not list.")
            if not all(k in JSON_TYPES for k in kinds):
                problems.append(f"{cls.__qualname__}.field_types[{field!r}] must be int, float, str, bool or Decimal "
                                f"(or a tuple of them); got {declared!r}.")
        for hook in ("get_server_filters", "has_permission"):
            if not isinstance(inspect.getattr_static(cls, hook), (classmethod, staticmethod)):
                problems.append(
                    f"{cls.__qualname__}.{hook} must be a @classmethod (user) -> ...: subscriptions are "
                    "checked before any instance exists."
                )
        return problems


class _WsRequest:
    method = "GET"

    def __init__(self, user: Any) -> None:
        self.user = user
        self.auth = None


registry: list[type[Subscription]] = []


def get_subscription(entity: str) -> type[Subscription] | None:
    for cls in reversed(registry):
        if cls.entity == entity:
            return cls
    return None


def describe(classes: Iterable[type[Subscription]] | None = None) -> list[dict[str, Any]]:
    return [
        {
            "entity": cls.entity,
            "channels": list(cls.channels),
            "filters": {field: list(ops) for field, ops in cls.filters.items()},
            "field_types": {
                field: [JSON_TYPES[k] for k in (kinds if isinstance(kinds, tuple) else (kinds,)) if k in JSON_TYPES]
                for field, kinds in cls.field_types.items()
            },
            "fields": None if cls.fields is None else list(cls.fields),
            "requires_auth": cls.requires_auth(),
            "description": cls.description or (cls.__doc__ or "").strip(),
        }
        for cls in (registry if classes is None else classes)
    ]


class Directory:
    """Where a consumer finds the entity a client names: this process's subscriptions.

    A gateway's directory (:class:`~supergraph_messaging.gateway.remote.GatewayDirectory`)
    adds its services' entities, which arrive after it starts.
    """

    def connected(self) -> None:
        """A client connected (a gateway starts reading its services with the first)."""

    async def find(self, entity: str) -> type[Subscription] | None:
        return get_subscription(entity)

    def unknown_hint(self) -> str:
        """Said after "Unknown entity": why it may be unknown here."""
        return ""
