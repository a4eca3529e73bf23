"""A service's ``/__schema`` as a gateway reads it: bounded, checked, and parsed without side effects.

Pure (no registry, no classes), so that it runs on a thread: the gateway
builds the classes from what this returns.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Mapping
from typing import Any

from supergraph_messaging.realtime.filters import JSON_TYPES, OPERATORS

#: The order of ``SCHEMA_ACCESS`` values, least strict first.
ACCESS_LEVELS = ("public", "staff", "token")

#: JSON type names as a schema writes them -> the Python types a filter value may have.
TYPES_BY_NAME = {name: kind for kind, name in JSON_TYPES.items()}

#: Bounds on one entity's description (a service's /__schema is input like any other).
_MAX_CHANNELS, _MAX_FILTERS, _MAX_FIELDS, _MAX_NAME, _MAX_DESCRIPTION = 50, 100, 500, 200, 2000


def _name(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= _MAX_NAME


def check_entry(described: Any) -> dict[str, Any]:
    """One entry of a service's ``/__schema`` ``subscriptions``, checked and bounded (ValueError if not)."""
    if not isinstance(described, Mapping):
        raise ValueError("an entry is not an object")
    entity, channels, filters = described.get("entity"), described.get("channels"), described.get("filters") or {}
    if not _name(entity):
        raise ValueError("an entry has no entity")
    if not isinstance(channels, list) or not channels or not all(_name(c) for c in channels):
        raise ValueError(f"{entity} lists no channels")
    if len(channels) > _MAX_CHANNELS:
        raise ValueError(f"{entity} lists {len(channels)} channels (at most {_MAX_CHANNELS})")
    if not isinstance(filters, Mapping) or len(filters) > _MAX_FILTERS or not all(
            _name(name) and isinstance(ops, list) and all(op in OPERATORS for op in ops)
            for name, ops in filters.items()):
        raise ValueError(f"{entity} has filters this version does not know: {str(filters)[:200]}")
    field_types: dict[str, list[str]] = {}
    raw_types = described.get("field_types")
    for name, kinds in (raw_types.items() if isinstance(raw_types, Mapping) else ()):
        if name in filters and isinstance(kinds, list):
            field_types[name] = [k for k in kinds if k in TYPES_BY_NAME]
    fields = described.get("fields")
    if isinstance(fields, list) and (len(fields) > _MAX_FIELDS or not all(_name(f) for f in fields)):
        raise ValueError(f"{entity} lists more than {_MAX_FIELDS} fields, or a field that is not a name")
    return {
        "entity": entity,
        "channels": list(channels),
        "filters": {name: list(ops) for name, ops in filters.items()},
        "field_types": field_types,
        "fields": list(fields) if isinstance(fields, list) else None,
        "description": str(described.get("description") or "")[:_MAX_DESCRIPTION],
        "requires_auth": bool(described.get("requires_auth")),
    }


def parse_schema(body: bytes, max_entities: int) -> tuple[list[dict[str, Any]], str, list[str]] | str:
    """A service's ``/__schema`` body -> (valid entity specs, its SCHEMA_ACCESS, problems), or what is wrong.

    Pure (no registry, no classes), so that it runs on a thread. The cyclic garbage collector is paused
    while the body is decoded: 8,000 entities are some 30,000 new containers, enough to start a full
    collection of the whole process (every Django object) while this thread holds the GIL, which stalled
    the gateway's WebSockets for up to 85 ms. The decoded document is freed by reference counting.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return "the answer is not JSON"
    finally:
        if collecting:
            gc.enable()
    described = document.get("subscriptions") if isinstance(document, dict) else None
    if not isinstance(described, list):
        return "the answer is not a /__schema document"
    if len(described) > max_entities:
        return f"it describes {len(described)} entities; GATEWAY_MAX_ENTITIES is {max_entities}"
    access = document.get("access")
    specs: list[dict[str, Any]] = []
    problems: list[str] = []
    for entry in described:
        try:
            specs.append(check_entry(entry))
        except ValueError as exc:
            problems.append(str(exc))
    return specs, access if access in ACCESS_LEVELS else "token", problems
