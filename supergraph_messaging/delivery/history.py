"""Reading back what a subscriber missed from a channel's stream (WebSocket resume, hub reconnects).

A position is ``(offset, epoch)``. The missed events are those after the
offset, if the epoch is still the channel's (history not lost), the stream
still holds the next offset (not trimmed past it), and there are at most
``limit`` of them in at most ``max_bytes`` of payloads; otherwise the gap
cannot be filled and the caller says so.

The bytes are known before anything is read: every stream entry carries
``b``, the payload bytes appended to the channel before it, and the meta hash
the total, so a resume from offset 0 over 60 MB of history is refused after
one small script, not after reading and decoding 60 MB (4 connections doing
that in a loop took daphne from 84 to 344 MB). What is read is read in pages
of about :data:`PAGE_BYTES`, and an entry whose raw bytes cannot match the
subscriber's filters is dropped before it is decoded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from supergraph_messaging.delivery import streams
from supergraph_messaging.redis import scripts
from supergraph_messaging.redis.errors import REDIS_ERRORS
from supergraph_messaging.redis.keys import is_glob
from supergraph_messaging.redis.serialization import UNDECODABLE, decode_or_undecodable

Position = tuple[int, str]

#: A raw payload test that may say False only for an event the subscriber's filters cannot match.
Prefilter = Callable[[bytes], bool]

#: About this many payload bytes are read from the stream at a time.
PAGE_BYTES = 256 * 1024

#: Pages of entries written before entries carried ``b`` (their size unknown until read).
_UNSIZED_PAGE = 16

# KEYS: meta   ARGV: an epoch for a channel without one   -> {epoch, last offset or false}
START = """
redis.call('HSETNX', KEYS[1], 'e', ARGV[1])
return redis.call('HMGET', KEYS[1], 'e', 's')
"""

# KEYS: stream, meta   ARGV: the first offset wanted
# -> {epoch, last offset, payload bytes ever appended, the first entry's id at or after the offset, the
#     payload bytes appended before it}   (each false when absent)
AHEAD = """
local meta = redis.call('HMGET', KEYS[2], 'e', 's', 'b')
local first = redis.call('XRANGE', KEYS[1], ARGV[1] .. '-0', '+', 'COUNT', 1)[1]
local id, before = false, false
if first then
  id = first[1]
  for i = 1, #first[2], 2 do
    if first[2][i] == 'b' then before = first[2][i + 1] end
  end
end
return {meta[1], meta[2], meta[3], id, before}
"""


class Missed(NamedTuple):
    """What :func:`missed` read: the events (each with its position), the payload bytes read, and the
    channel's last offset when it read (the events run up to it: what a later resume may reuse)."""

    events: list[tuple[Position, Any]]
    bytes_read: int
    upto: int = -1


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _offset(entry_id: Any) -> int:
    return int(_text(entry_id).split("-")[0])


async def missed(conn: Any, channel: str, position: Position, limit: int, max_bytes: int,
                 prefilter: Prefilter | None = None) -> Missed | None:
    """The events of ``channel`` after ``position``; None when unrecoverable or over a bound.

    Events up to the channel's last offset as of the first read: one appended meanwhile reaches a live
    subscriber anyway. An event ``prefilter`` rejects is left out undecoded (it could not match).
    """
    offset, epoch = position
    stream, meta, _idem = streams.keys(channel)
    reply = await scripts.arun(conn, AHEAD, [stream, meta], [offset + 1])
    current_epoch, last, total, first_id, before = reply
    if current_epoch is None:
        return None if offset else Missed([], 0, 0)  # nothing was ever published here, or the history is gone
    if _text(current_epoch) != epoch:
        return None
    last_offset = int(last or 0)
    if last_offset < offset:
        return None  # a position the stream never gave: not a client's to resume from
    if last_offset == offset:
        return Missed([], 0, offset)
    if last_offset - offset > limit or first_id is None or _offset(first_id) != offset + 1:
        return None  # too many, or trimmed past the position
    size = int(total) - int(before) if total is not None and before is not None else None
    if size is not None and size > max_bytes:
        return None
    out: list[tuple[Position, Any]] = []
    read = 0
    start = offset + 1
    page = _UNSIZED_PAGE if size is None else max(1, PAGE_BYTES * (last_offset - offset) // max(size, 1))
    while start <= last_offset:
        entries = await conn.xrange(stream, min=f"{start}-0", max=f"{last_offset}-0",
                                    count=min(page, last_offset - start + 1))
        if not entries or _offset(entries[0][0]) != start:
            return None  # trimmed while being read
        for entry_id, fields in entries:
            raw = fields.get(b"d", b"")
            read += len(raw)
            if read > max_bytes:
                return None
            if prefilter is not None and not prefilter(raw):
                continue
            data = decode_or_undecodable(raw)
            if data is UNDECODABLE:
                continue
            entry_offset = _offset(entry_id)
            if isinstance(data, dict):
                data["_position"] = {"offset": entry_offset, "epoch": epoch}
            out.append(((entry_offset, epoch), data))
        start = _offset(entries[-1][0]) + 1
    return Missed(out, read, last_offset)


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


async def fill(conn: Any, channel: str, position: Position | None, limit: int, max_bytes: int,
               prefilter: Prefilter | None = None) -> Missed | None:
    """:func:`missed`, or None when it cannot be told: no position, a glob (no stream of its own), Redis
    failing. The hub's reconnect and a client's resume both treat None as "send a gap"."""
    if position is None or is_glob(channel):
        return None
    try:
        return await missed(conn, channel, position, limit, max_bytes, prefilter)
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
