"""Reading back what a subscriber missed from a channel's stream (WebSocket resume, hub reconnects).

A position is ``(offset, epoch)``. The missed events are those after the
offset, if the epoch is still the channel's (history not lost), the stream
still holds the next offset (not trimmed past it), and there are at most
``limit`` of them; otherwise the gap cannot be filled and the caller says so.
"""

from __future__ import annotations

from typing import Any

from . import scripts, streams
from .connection import REDIS_ERRORS
from .keys import is_glob
from .serialization import UNDECODABLE, decode_or_undecodable

Position = tuple[int, str]

# KEYS: meta   ARGV: an epoch for a channel without one   -> {epoch, last offset or false}
START = """
redis.call('HSETNX', KEYS[1], 'e', ARGV[1])
return redis.call('HMGET', KEYS[1], 'e', 's')
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def missed(conn: Any, channel: str, position: Position, limit: int) -> list[tuple[Position, Any]] | None:
    """The events of ``channel`` after ``position``, each with its position; None when unrecoverable."""
    offset, epoch = position
    stream, meta, _idem = streams.keys(channel)
    current_epoch, last = await conn.hmget(meta, ["e", "s"])
    if current_epoch is None:
        return None if offset else []  # nothing was ever published here, or the history is gone
    if _text(current_epoch) != epoch:
        return None
    last_offset = int(last or 0)
    if last_offset < offset:
        return None  # a position the stream never gave: not a client's to resume from
    if last_offset == offset:
        return []
    entries = await conn.xrange(stream, min=f"{offset + 1}-0", max="+", count=limit + 1)
    if len(entries) > limit or not entries or int(_text(entries[0][0]).split("-")[0]) != offset + 1:
        return None  # too many, or trimmed past the position
    out: list[tuple[Position, Any]] = []
    for entry_id, fields in entries:
        data = decode_or_undecodable(fields.get(b"d", b""))
        if data is UNDECODABLE:
            continue
        entry_offset = int(_text(entry_id).split("-")[0])
        if isinstance(data, dict):
            data["_position"] = {"offset": entry_offset, "epoch": epoch}
        out.append(((entry_offset, epoch), data))
    return out


async def current(conn: Any, channels: list[str]) -> dict[str, Position]:
    """Each channel's position now: its last offset (0 before the first event) and its epoch.

    A channel without history gets its epoch here, so that a client subscribed before the first event
    holds a position that a later loss of history contradicts (offset 0 of "any epoch" could not).
    """
    out: dict[str, Position] = {}
    for channel in channels:
        epoch, last = await scripts.arun(conn, START, [streams.keys(channel)[1]], [streams.new_epoch()])
        out[channel] = (int(last or 0), _text(epoch))
    return out


async def entry_at(conn: Any, channel: str, position: Position) -> Any:
    """The payload of the stream entry at ``position`` (its epoch still the channel's), or None."""
    offset, epoch = position
    stream, meta, _idem = streams.keys(channel)
    current_epoch = await conn.hget(meta, "e")
    if current_epoch is None or _text(current_epoch) != epoch:
        return None
    entries = await conn.xrange(stream, min=f"{offset}-0", max=f"{offset}-0", count=1)
    if not entries:
        return None
    data = decode_or_undecodable(entries[0][1].get(b"d", b""))
    return None if data is UNDECODABLE else data


async def fill(conn: Any, channel: str, position: Position | None, limit: int) -> list[tuple[Position, Any]] | None:
    """:func:`missed`, or None when it cannot be told: no position, a glob (no stream of its own), Redis
    failing. The hub's reconnect and a client's resume both treat None as "send a gap"."""
    if position is None or is_glob(channel):
        return None
    try:
        return await missed(conn, channel, position, limit)
    except REDIS_ERRORS:
        return None


def position_of(data: Any) -> Position | None:
    """The ``_position`` a durable event carries, or None."""
    if not isinstance(data, dict):
        return None
    position = data.get("_position")
    if not isinstance(position, dict):
        return None
    offset, epoch = position.get("offset"), position.get("epoch")
    if isinstance(offset, int) and not isinstance(offset, bool) and isinstance(epoch, str):
        return offset, epoch
    return None
