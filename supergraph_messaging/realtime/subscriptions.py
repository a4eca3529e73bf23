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
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from channels.db import database_sync_to_async

logger = logging.getLogger("supergraph_messaging.ws")

OPERATORS: dict[str, Callable[[Any, Any], bool]] = {}


def _op(name: str) -> Callable[[Callable[[Any, Any], bool]], Callable[[Any, Any], bool]]:
    def register(func: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
        def safe(value: Any, expected: Any) -> bool:
            try:
                return bool(func(value, expected))
            except TypeError:  # e.g. "a" > 1: an event of another shape simply does not match
                return False

        OPERATORS[name] = safe
        return func

    return register


def match_key(value: Any) -> Any:
    """How a JSON scalar compares in filters: ``true`` is not ``1`` (Python says it is)."""
    return ("bool", value) if isinstance(value, bool) else value


@_op("eq")
def _eq(value: Any, expected: Any) -> bool:
    return bool(value == expected) and isinstance(value, bool) == isinstance(expected, bool)


@_op("ne")
def _ne(value: Any, expected: Any) -> bool:
    return not _eq(value, expected)


_op("gt")(operator.gt)
_op("gte")(operator.ge)
_op("lt")(operator.lt)
_op("lte")(operator.le)


@_op("in")
def _in(value: Any, expected: Any) -> bool:
    if isinstance(expected, frozenset):  # of match_key()s: see parse_filters
        return match_key(value) in expected
    return any(_eq(value, e) for e in expected)


@_op("contains")
def _contains(value: Any, expected: Any) -> bool:
    return value is not None and expected in value


@_op("icontains")
def _icontains(value: Any, expected: Any) -> bool:
    return isinstance(value, str) and isinstance(expected, str) and expected.casefold() in value.casefold()


class Refused(ValueError):
    """A subscribe answered with an ``error`` frame for its id; the connection stays open."""

    code = "forbidden"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class FilterError(Refused):
    """A client filter the Subscription does not allow (sent back as ``invalid_filter``)."""

    code = "invalid_filter"


@dataclass(frozen=True)
class Condition:
    field: str
    op: str
    value: Any

    def matches(self, data: Mapping[str, Any]) -> bool:
        if self.field not in data:
            return False
        return OPERATORS[self.op](data[self.field], self.value)


#: Characters every JSON encoder writes as themselves (Go's escapes <, > and &; PHP's escapes /).
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -_.:@+,;=!#$%*()[]{}|~^?'")


def _needle(value: Any) -> bytes | None:
    """Bytes that any JSON encoding of an object with a field equal to ``value`` contains, or None."""
    if isinstance(value, tuple) and len(value) == 2 and value[0] == "bool":  # a match key
        value = value[1]
    if value is None or isinstance(value, bool):
        return b"null" if value is None else (b"true" if value else b"false")
    if isinstance(value, int) and abs(value) < 10**15:  # an equal float is written with these digits too
        return str(value).encode()
    if isinstance(value, str) and value and set(value) <= _PLAIN:
        return b'"' + value.encode() + b'"'
    return None


def raw_prefilter(conditions: Iterable[Condition]) -> Callable[[bytes], bool] | None:
    """A test on an event's raw JSON that is False only if the event cannot match ``conditions``.

    For reading history, where most events may not match: a substring search
    is far cheaper than decoding. Only ``eq`` and ``in`` on plain values give
    needles; None when no condition does (then every event is decoded).
    """
    groups: list[tuple[bytes, ...]] = []
    for condition in conditions:
        values = (condition.value,) if condition.op == "eq" else condition.value if condition.op == "in" else None
        if not isinstance(values, (tuple, list, frozenset)):
            continue
        needles = [_needle(v) for v in values]
        if needles and all(n is not None for n in needles):
            groups.append(tuple(n for n in needles if n is not None))
    if not groups:
        return None

    def test(raw: bytes) -> bool:
        return all(any(n in raw for n in needles) for needles in groups)

    return test


_SCALARS = (str, int, float, bool, type(None))

#: The declarable field types, by their JSON names.
JSON_TYPES: dict[type, str] = {int: "an integer", float: "a number", str: "a string", bool: "a boolean"}


def json_type_name(value: Any) -> str:
    if value is None:
        return "null"
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return JSON_TYPES[kind]
    return type(value).__name__


def can_match(value: Any, declared: type | tuple[type, ...]) -> bool:
    """Whether a filter value of this JSON type can ever equal a field of the declared type.

    Filters are type-strict (``"36"`` never matches ``36``, ``true`` never
    ``1``), so a value of another type would silently match nothing.
    ``null`` can always match (a field may be null); a ``float`` field
    takes integers too.
    """
    if value is None:
        return True
    kinds = declared if isinstance(declared, tuple) else (declared,)
    if isinstance(value, bool):
        return bool in kinds
    if isinstance(value, int):
        return int in kinds or float in kinds
    return any(isinstance(value, k) and k is not bool for k in kinds)


_TYPED_OPS = frozenset({"eq", "ne", "in", "gt", "gte", "lt", "lte"})


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

        Here, :meth:`access` on a thread (permission classes may read the database).
        """
        server: dict[str, Any] | None = await database_sync_to_async(cls.access)(user)
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
        if raw is None:
            return []
        if not isinstance(raw, Mapping):
            raise FilterError("filters must be an object of field__op: value")
        conditions = []
        for key, value in raw.items():
            if not isinstance(key, str) or not key:
                raise FilterError(f"invalid filter key {key!r}")
            field, _, op = key.partition("__")
            op = op or "eq"
            if op not in OPERATORS:
                raise FilterError(f"unknown operator {op!r} in {key!r}; known: {', '.join(sorted(OPERATORS))}")
            if declared:
                allowed = cls.filters.get(field)
                if allowed is None:
                    known = ", ".join(sorted(cls.filters)) or "none"
                    raise FilterError(f"{cls.entity} cannot be filtered by {field!r}; allowed: {known}")
                if op not in allowed:
                    raise FilterError(f"{cls.entity}.{field} does not allow {op!r}; allowed: {', '.join(allowed)}")
            if op == "in":
                if not isinstance(value, list) or not all(isinstance(v, _SCALARS) for v in value):
                    raise FilterError(f"{key!r} needs a list of scalar values")
                if len(value) > max_in_values:
                    raise FilterError(f"{key!r} has {len(value)} values; the limit is {max_in_values}")
                if all(isinstance(v, (str, int, float, bool)) for v in value):
                    value = frozenset(match_key(v) for v in value)
            elif op in ("contains", "icontains"):
                if not isinstance(value, str) and op == "icontains":
                    raise FilterError(f"{key!r} needs a string")
            elif not isinstance(value, _SCALARS):
                raise FilterError(f"{key!r} needs a scalar value")
            declared_type = cls.field_types.get(field) if declared and op in _TYPED_OPS else None
            if declared_type is not None:
                for item in raw[key] if op == "in" else [value]:
                    if not can_match(item, declared_type):
                        kinds = declared_type if isinstance(declared_type, tuple) else (declared_type,)
                        raise FilterError(
                            f"{cls.entity}.{field} is {' or '.join(JSON_TYPES.get(k, k.__name__) for k in kinds)}; "
                            f"{item!r} ({json_type_name(item)}) can never match it"
                        )
            conditions.append(Condition(field, op, value))
        return conditions

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
                problems.append(f"{cls.__qualname__}.field_types[{field!r}] must be int, float, str or bool "
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
