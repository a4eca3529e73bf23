"""Dead letters: list, show, replay and discard them (``manage.py messaging_deadletters`` and the admin).

A durable event whose handler failed ``MAX_DELIVERIES`` times is copied to
its channel's dead-letter stream (``...:stream:dead``) with the consumer
group that gave up, the reason and the original entry's id, and
acknowledged (:mod:`~supergraph_messaging.delivery.consumer_groups`).

Replay puts the original entry back into that group's pending list
(``XCLAIM ... FORCE``): the same entry, so the same event id, and only that
group sees it again. A new ``XADD`` would reach every group of the channel:
the other services' ``once=True`` handlers would skip it, their other
handlers would run it twice. It goes to the group's most recently active
consumer, which reads its own pending entries whenever it is idle (within
a second); with no consumer, to a placeholder that any consumer of the
group claims after ``CLAIM_IDLE``. ``once=True`` handlers stay
exactly-once: the failed attempts rolled back their record of the event.

The claim and the removal of the dead letter are one script, so a replay
is neither lost nor doubled between them (two operators replaying the
same letter: one replays, the other is told it is gone). An entry the
stream has trimmed since (``STREAM_MAXLEN``) cannot be replayed: the tool
says so and keeps the dead letter.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import redis

from supergraph_messaging.delivery import streams
from supergraph_messaging.delivery.consumer_groups import dead_letter_key
from supergraph_messaging.operations.streams import channel_of, stream_keys, text
from supergraph_messaging.redis import scripts
from supergraph_messaging.redis.serialization import UNDECODABLE, decode_or_undecodable

logger = logging.getLogger("supergraph_messaging.deadletters")

#: Dead letters a listing or a bulk action takes at most, over every channel.
LIMIT = 1000
#: The idle time (ms) given to a replayed entry that has no consumer to go to: any consumer's next
#: XAUTOCLAIM takes it, whatever its CLAIM_IDLE.
UNCLAIMED_IDLE_MS = 30 * 24 * 3600 * 1000
PLACEHOLDER_CONSUMER = "sgm.replay"

# KEYS: stream, dead   ARGV: group, consumer, entry id, dead-letter id, idle ms
# -> 1 replayed; 0 the entry was trimmed from the stream; -1 the dead letter is gone (replayed or discarded)
REPLAY = """
if #redis.call('XRANGE', KEYS[2], ARGV[4], ARGV[4]) == 0 then return -1 end
if #redis.call('XRANGE', KEYS[1], ARGV[3], ARGV[3]) == 0 then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'IDLE', ARGV[5], 'FORCE', 'JUSTID')
redis.call('XDEL', KEYS[2], ARGV[4])
return 1
"""


class DeadLetterError(Exception):
    """A replay or discard that cannot be done; the message says why and what to do."""


@dataclass
class DeadLetter:
    channel: str
    id: str  # in the dead-letter stream
    entry: str  # the original entry's id in the channel's stream
    event_id: str
    group: str | None  # None: dead-lettered before the group was recorded (give one to replay it)
    reason: str
    data: Any  # the event, or its raw text when it is not JSON
    size: int  # payload bytes


def _letter(channel: str, letter_id: Any, fields: dict[bytes, bytes]) -> DeadLetter:
    payload = fields.get(b"d", b"")
    data = decode_or_undecodable(payload)
    entry = text(fields.get(b"entry", b""))
    group = fields.get(b"group")
    return DeadLetter(channel=channel, id=text(letter_id), entry=entry, event_id=text(fields.get(b"o", entry)),
                      group=None if group is None else text(group), reason=text(fields.get(b"reason", b"")),
                      data=text(payload) if data is UNDECODABLE else data, size=len(payload))


def channels(conn: redis.Redis) -> list[str]:
    """The channels that have a dead-letter stream (at most ``STREAM_LIMIT``)."""
    return [channel_of(key) for key in stream_keys(conn, ":dead")]


def letters(conn: redis.Redis, channel: str, limit: int = LIMIT) -> list[DeadLetter]:
    """``channel``'s dead letters, oldest first."""
    entries: Any = conn.xrange(dead_letter_key(channel), count=limit)
    return [_letter(channel, i, f) for i, f in entries]


def get(conn: redis.Redis, channel: str, letter_id: str) -> DeadLetter | None:
    try:
        found: Any = conn.xrange(dead_letter_key(channel), min=letter_id, max=letter_id, count=1)
    except redis.ResponseError:  # not a stream id
        return None
    return _letter(channel, *found[0]) if found else None


def select(conn: redis.Redis, ids: list[str] | tuple[str, ...] = (), channel: str | None = None,
           everything: bool = False, limit: int = LIMIT) -> list[DeadLetter]:
    """The dead letters an action names: by ``ids`` (in ``channel``, else in any channel), every one of
    ``channel``, or with ``everything`` every one of every channel; at most ``limit``. Raises
    :class:`DeadLetterError` for an id no channel has, and when nothing was named (a bulk action is
    never the default)."""
    if not ids and channel is None and not everything:
        raise DeadLetterError("Name the dead letters: their ids, --channel, or --all.")
    where = [channel] if channel is not None else channels(conn)
    if not ids:
        out: list[DeadLetter] = []
        for name in where:
            out += letters(conn, name, limit - len(out))
            if len(out) >= limit:
                break
        return out
    found = []
    for letter_id in ids:
        letter = next((x for name in where if (x := get(conn, name, letter_id)) is not None), None)
        if letter is None:
            raise DeadLetterError(f"No dead letter {letter_id!r} in {channel or 'any channel'!r}.")
        found.append(letter)
    return found


def replay(conn: redis.Redis, letter: DeadLetter, group: str | None = None, by: str = "") -> str:
    """Put ``letter``'s entry back into its group's pending list and remove the letter; the consumer it
    went to. ``group`` is needed only for a letter that does not name one."""
    group = group or letter.group
    if not group:
        raise DeadLetterError(f"Dead letter {letter.id} of {letter.channel!r} does not say which consumer group "
                              "gave up on it (it predates that record): name the group to replay it to.")
    stream = streams.keys(letter.channel)[0]
    try:
        consumers = conn.xinfo_consumers(stream, group)
    except redis.ResponseError as exc:
        raise DeadLetterError(f"Consumer group {group!r} does not exist on {letter.channel!r} ({exc}).") from exc
    if consumers:
        consumer, idle = text(min(consumers, key=lambda c: int(c["idle"]))["name"]), 0
    else:
        consumer, idle = PLACEHOLDER_CONSUMER, UNCLAIMED_IDLE_MS
    done = scripts.run(conn, REPLAY, [stream, dead_letter_key(letter.channel)],
                       [group, consumer, letter.entry, letter.id, idle])
    if done == -1:
        raise DeadLetterError(f"Dead letter {letter.id} of {letter.channel!r} is gone (replayed or discarded "
                              "meanwhile).")
    if done == 0:
        raise DeadLetterError(f"Dead letter {letter.id} of {letter.channel!r}: its entry {letter.entry} was "
                              "trimmed from the stream (STREAM_MAXLEN), so it cannot be put back; it was kept. "
                              "Handle the event by hand, then discard it.")
    logger.warning("Replayed dead letter %s of %r (event %s) to consumer group %s, consumer %s%s.", letter.id,
                   letter.channel, letter.event_id, group, consumer, f", by {by}" if by else "")
    return consumer


def discard(conn: redis.Redis, letter: DeadLetter, by: str = "") -> bool:
    """Remove ``letter``; False when it was gone already."""
    removed = bool(conn.xdel(dead_letter_key(letter.channel), letter.id))
    if removed:
        logger.warning("Discarded dead letter %s of %r (event %s, consumer group %s, reason: %s)%s.", letter.id,
                       letter.channel, letter.event_id, letter.group or "unknown", letter.reason,
                       f", by {by}" if by else "")
    return removed
