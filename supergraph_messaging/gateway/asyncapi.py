"""The project as an AsyncAPI 3.0 document: what it publishes, what it consumes, what ``/subscribe`` serves.

Built from the same registries that run the project (``EventConfig``
registrations, ``@redis_subscribe`` handlers, ``invalidate_on`` templates,
``Subscription`` classes), so it cannot drift from the code. It names
channels, entities, fields and filter operators; never module paths or
cache key templates (it is served under the same access rule as
``/__schema``).

From the project's point of view, as AsyncAPI 3 wants: an event published by
an ``EventConfig`` is a ``send`` on a Redis channel; a handler is a
``receive``; on the WebSocket, the client's ``subscribe`` frame is a
``receive`` and each ``next`` frame a ``send``.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from supergraph_messaging.cache import invalidation
from supergraph_messaging.conf import conf
from supergraph_messaging.delivery.subscriber import get_global_subscriber
from supergraph_messaging.events import config
from supergraph_messaging.realtime.filters import TYPED_OPS
from supergraph_messaging.realtime.subscriptions import Subscription, registry

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

#: DRF serializer field class names and Django model field types, as JSON Schema.
_FIELD_SCHEMAS: dict[str, dict[str, Any]] = {
    "IntegerField": {"type": "integer"},
    "BigIntegerField": {"type": "integer"},
    "SmallIntegerField": {"type": "integer"},
    "PositiveIntegerField": {"type": "integer", "minimum": 0},
    "PositiveSmallIntegerField": {"type": "integer", "minimum": 0},
    "PositiveBigIntegerField": {"type": "integer", "minimum": 0},
    "AutoField": {"type": "integer"},
    "BigAutoField": {"type": "integer"},
    "SmallAutoField": {"type": "integer"},
    "FloatField": {"type": "number"},
    "DecimalField": {"type": "string", "description": "a decimal, as a string"},
    "BooleanField": {"type": "boolean"},
    "NullBooleanField": {"type": ["boolean", "null"]},
    "CharField": {"type": "string"},
    "TextField": {"type": "string"},
    "SlugField": {"type": "string"},
    "EmailField": {"type": "string", "format": "email"},
    "URLField": {"type": "string", "format": "uri"},
    "UUIDField": {"type": "string", "format": "uuid"},
    "DateTimeField": {"type": "string", "format": "date-time"},
    "DateField": {"type": "string", "format": "date"},
    "TimeField": {"type": "string", "format": "time"},
    "JSONField": {},
    "DictField": {"type": "object"},
    "ListField": {"type": "array"},
    "PrimaryKeyRelatedField": {"type": ["integer", "string"]},
    "ForeignKey": {"type": ["integer", "string", "null"]},
}
_PY_TYPES = {int: "integer", float: "number", str: "string", bool: "boolean"}
#: A ``Decimal`` field compares as a number, written either way (DRF writes a ``DecimalField`` as a string).
_DECIMAL_TYPES = ["number", "string"]

META_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Added to every event by supergraph_messaging.",
    "properties": {
        "event": {"type": "string", "description": "the channel"},
        "action": {"type": "string"},
        "entity": {"type": "string"},
        "event_id": {"type": "string", "description": "the change's id; a CacheSync write carries the same"},
        "ts": {"type": "string", "format": "date-time"},
        "previous": {"type": "object", "description": "on update: the changed fields' earlier values"},
    },
    "required": ["event", "action", "entity", "event_id", "ts"],
}
POSITION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "With DELIVERY = 'durable': the event's place in its channel's stream.",
    "properties": {"offset": {"type": "integer"}, "epoch": {"type": "string"}},
}


def _id(text: str) -> str:
    """An AsyncAPI component key (letters, digits, '.', '_', '-') for a channel or entity name."""
    return _UNSAFE.sub("_", text).strip("_") or "_"


def _field_schema(field: Any) -> dict[str, Any]:
    for cls in type(field).__mro__:
        if cls.__name__ in _FIELD_SCHEMAS:
            return dict(_FIELD_SCHEMAS[cls.__name__])
    internal = getattr(field, "get_internal_type", None)
    return dict(_FIELD_SCHEMAS.get(internal(), {})) if internal else {}


def payload_schema(registration: config.EventRegistration) -> dict[str, Any]:
    """The serializer's fields (or the model's, for model events), restricted to ``payload_fields``."""
    names = registration.config.payload_fields
    properties: dict[str, Any] = {}
    serializer_class = getattr(registration.viewset, "serializer_class", None)
    if serializer_class is not None:
        fields = serializer_class().fields
        for name, field in fields.items():
            if getattr(field, "write_only", False) or (names is not None and name not in names):
                continue
            properties[name] = _field_schema(field)
    else:
        model = registration.resolve_model()
        for name in names or ():
            properties[name] = _field_schema(model._meta.get_field(name))
    properties["_meta"] = {"$ref": "#/components/schemas/EventMeta"}
    properties["_position"] = {"$ref": "#/components/schemas/EventPosition"}
    return {"type": "object", "properties": properties, "required": ["_meta"]}


def _filter_schema(subscription: type[Subscription]) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for field, ops in subscription.filters.items():
        kinds = subscription.field_types.get(field)
        declared = kinds if isinstance(kinds, tuple) else (kinds,)
        types = [_PY_TYPES[k] for k in declared if k in _PY_TYPES] + (_DECIMAL_TYPES if Decimal in declared else [])
        value: dict[str, Any] = {"type": types[0] if len(types) == 1 else types} if types else {}
        for op in ops:
            if op == "in":
                schema: dict[str, Any] = {"type": "array", "items": value}
            else:
                schema = value if op in TYPED_OPS else {}
            properties[f"{field}__{op}"] = schema
            if op == "eq":
                properties[field] = value
    return {"type": "object", "properties": properties, "additionalProperties": False}


def document(ws_host: str = "localhost") -> dict[str, Any]:
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {"AnyEvent": {"name": "AnyEvent", "contentType": "application/json",
                                             "payload": {"type": "object"}}}

    def redis_channel(address: str) -> tuple[str, dict[str, Any]]:
        key = _id(address)
        channel = channels.setdefault(key, {"address": address, "servers": [{"$ref": "#/servers/redis"}],
                                            "messages": {}})
        return key, channel

    for registration in config.registry:
        entity = registration.entity
        schema = payload_schema(registration)
        for action, address in registration.config.publish.items():
            key, channel = redis_channel(address)
            name = _id(f"{address}.{entity}.{action}")  # two registrations may share entity and action
            messages[name] = {"name": name, "title": f"{entity} {action}", "contentType": "application/json",
                              "payload": schema}
            channel["messages"][name] = {"$ref": f"#/components/messages/{name}"}
            operations[_id(f"publish.{address}.{entity}.{action}")] = {
                "action": "send", "channel": {"$ref": f"#/channels/{key}"},
                "summary": f"Published after a committed {action} of {entity}.",
                "messages": [{"$ref": f"#/channels/{key}/messages/{name}"}]}

    def consumer(address: str, kind: str, summary: str) -> None:
        key, channel = redis_channel(address)
        if not channel["messages"]:
            channel["messages"]["AnyEvent"] = {"$ref": "#/components/messages/AnyEvent"}
        operations[_id(f"{kind}.{address}")] = {
            "action": "receive", "channel": {"$ref": f"#/channels/{key}"}, "summary": summary,
            "messages": [{"$ref": f"#/channels/{key}/messages/{m}"} for m in channel["messages"]]}

    handled = get_global_subscriber().handler_names()
    for address, names in handled.items():
        own = [n for n in names if not n.startswith("supergraph_messaging.")]
        if own:
            consumer(address, "consume", f"@redis_subscribe: {len(own)} handler(s).")
    for address in sorted({c for r in invalidation.templates for c in r.channels}):
        count = sum(address in r.channels for r in invalidation.templates)
        consumer(address, "invalidate", f"invalidate_on: deletes the keys of {count} cache template(s).")

    ws_messages: dict[str, Any] = {}
    for subscription in registry:
        entity = _id(subscription.entity)
        sub, nxt = f"{entity}.subscribe", f"{entity}.next"
        messages[sub] = {"name": sub, "title": f"subscribe to {subscription.entity}", "contentType": "application/json",
                         "payload": {"type": "object", "required": ["id", "type", "payload"], "properties": {
                             "id": {"type": "string", "maxLength": 128}, "type": {"const": "subscribe"},
                             "payload": {"type": "object", "required": ["entity"], "properties": {
                                 "entity": {"const": subscription.entity},
                                 "filters": _filter_schema(subscription),
                                 "fields": {"type": "array", "items": (
                                     {"enum": list(subscription.fields)} if subscription.fields is not None
                                     else {"type": "string"})},
                                 "since": {"type": "object", "description": "channel -> [offset, epoch]"}}}}}}
        messages[nxt] = {"name": nxt, "title": f"{subscription.entity} event", "contentType": "application/json",
                         "payload": {"type": "object", "properties": {
                             "id": {"type": "string"}, "type": {"const": "next"},
                             "payload": {"type": "object", "properties": {
                                 "entity": {"const": subscription.entity},
                                 "channel": {"enum": list(subscription.channels)},
                                 "offset": {"type": "integer"}, "epoch": {"type": "string"},
                                 "data": {"type": "object"}}}}}}
        ws_messages[sub] = {"$ref": f"#/components/messages/{sub}"}
        ws_messages[nxt] = {"$ref": f"#/components/messages/{nxt}"}
        description = subscription.description or (subscription.__doc__ or "").strip()
        operations[_id(f"subscribe.{subscription.entity}")] = {
            "action": "receive", "channel": {"$ref": "#/channels/subscribe"},
            "summary": description or f"Subscribe to {subscription.entity}.",
            "messages": [{"$ref": f"#/channels/subscribe/messages/{sub}"}]}
        operations[_id(f"next.{subscription.entity}")] = {
            "action": "send", "channel": {"$ref": "#/channels/subscribe"},
            "summary": f"{subscription.entity} events matching the subscription's filters, from channels "
                       + ", ".join(subscription.channels) + ".",
            "messages": [{"$ref": f"#/channels/subscribe/messages/{nxt}"}]}
    channels["subscribe"] = {"address": "/subscribe", "servers": [{"$ref": "#/servers/websocket"}],
                             "messages": ws_messages,
                             "description": "graphql-transport-ws style: connection_init, subscribe, next, "
                                            "complete, ping/pong."}
    title = conf.service_name or "Django project"
    return {
        "asyncapi": "3.0.0",
        "info": {"title": f"{title} events", "version": "1.0.0",
                 "description": "Generated by supergraph_messaging from the running project's registrations."},
        "defaultContentType": "application/json",
        "servers": {
            "redis": {"host": "redis", "protocol": "redis", "description": "The project's Redis (REDIS_URL)."},
            "websocket": {"host": ws_host, "protocol": "ws", "pathname": "/subscribe"},
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages,
                       "schemas": {"EventMeta": META_SCHEMA, "EventPosition": POSITION_SCHEMA}},
    }
