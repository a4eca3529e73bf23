"""The ``/subscribe`` protocol (modelled on graphql-transport-ws): close codes, frames, and what a client's
``subscribe`` may say. Pure functions: no I/O, no state."""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, Any

from supergraph_messaging.conf import conf
from supergraph_messaging.delivery.history import Position
from supergraph_messaging.realtime.subscriptions import Subscription
from supergraph_messaging.redis.serialization import dumps

if TYPE_CHECKING:  # the hub's replays encode with this module
    from supergraph_messaging.realtime.hub import Route

MALFORMED = 4400
UNAUTHORIZED = 4401
FORBIDDEN = 4403
INIT_TIMEOUT = 4408
DUPLICATE_ID = 4409
TOO_MANY = 4429
TOO_SLOW = 4008

#: Why each close code closes (logged with it).
REASONS = {
    MALFORMED: "malformed message",
    UNAUTHORIZED: "subscribe before connection_ack",
    FORBIDDEN: "forbidden",
    INIT_TIMEOUT: "no connection_init in time",
    DUPLICATE_ID: "duplicate subscription id",
    TOO_MANY: "too many subscriptions or messages",
    TOO_SLOW: "client too slow",
}

#: The frame types a client may send; each is handled by the consumer's ``on_<type>``.
CLIENT_TYPES = frozenset({"connection_init", "ping", "pong", "subscribe", "complete"})

#: A resume costs the connection one message of its rate limit per this many payload bytes it reads.
RECOVERY_BYTES_PER_MESSAGE = 64 * 1024


def qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


@functools.lru_cache(maxsize=1024)
def quoted(text: str) -> str:
    """A channel name or epoch as JSON (few distinct values, one per event)."""
    return json.dumps(text)


#: json.dumps with separators builds an encoder per call; frames share this one.
_COMPACT = json.JSONEncoder(separators=(",", ":"))


def frame(message: dict[str, Any]) -> str:
    """A frame's text."""
    return _COMPACT.encode(message)


def error_frame(sub_id: str, code: str, text: str) -> str:
    return frame({"id": sub_id, "type": "error", "payload": [{"code": code, "message": text}]})


def next_prefix(route: Route) -> str:
    """The start of every ``next`` frame of ``route``, up to its channel (encoded once per route)."""
    return (f'{{"id":{json.dumps(route.sub_id)},"type":"next",'
            f'"payload":{{"entity":{json.dumps(route.entity)},"channel":')


def projected(fields: tuple[str, ...] | None, data: Any) -> str:
    """An event as a subscription sends it: only its ``fields`` when it asked for some, encoded."""
    if fields is not None and isinstance(data, dict):
        data = {f: data[f] for f in fields if f in data}
    return dumps(data).decode()


def positions_payload(positions: dict[str, Position]) -> dict[str, dict[str, Any]]:
    return {channel: {"offset": offset, "epoch": epoch} for channel, (offset, epoch) in positions.items()}


def parse_since(raw: Any) -> tuple[dict[str, Position] | None, str]:
    """``{"channel": {"offset": n, "epoch": "..."}}`` -> positions, or the problem."""
    if raw is None:
        return None, ""
    if not isinstance(raw, dict) or len(raw) > 100:
        return None, "since must be an object of channel: {offset, epoch}."
    out: dict[str, Position] = {}
    for channel, position in raw.items():
        offset = position.get("offset") if isinstance(position, dict) else None
        epoch = position.get("epoch") if isinstance(position, dict) else None
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0 or not isinstance(epoch, str):
            return None, f"since[{channel!r}] must be {{\"offset\": a non-negative integer, \"epoch\": a string}}."
        out[str(channel)] = (offset, epoch)
    return out, ""


def parse_fields(subscription: type[Subscription], raw: Any) -> tuple[tuple[str, ...] | None, str]:
    """(fields, "") or (None, the problem): a bounded list of names the Subscription allows."""
    if raw is None:
        return None, ""
    if not isinstance(raw, list) or not all(isinstance(f, str) and 0 < len(f) <= 128 for f in raw):
        return None, "fields must be a list of field names."
    names = tuple(dict.fromkeys(raw))
    if len(names) > conf.ws_max_fields:
        return None, f"fields lists {len(names)} names; the limit is {conf.ws_max_fields}."
    allowed = subscription.fields
    if allowed is not None:
        unknown = [n for n in names if n not in allowed]
        if unknown:
            return None, f"{subscription.entity} has no field {unknown[0]!r}; fields: {', '.join(allowed)}."
    return names, ""


def subscribe_request(message: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """A ``subscribe`` frame's id and payload, or None when it is malformed (the connection closes 4400)."""
    sub_id = message.get("id")
    payload = message.get("payload")
    if not isinstance(sub_id, str) or not sub_id or len(sub_id) > 128 or not isinstance(payload, dict):
        return None
    return sub_id, payload
