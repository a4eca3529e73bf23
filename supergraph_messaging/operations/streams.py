"""What the durable streams hold, for the admin and the dead-letter tools: length, offset and epoch,
groups with lag and pending, dead letters. Read-only; found by a bounded SCAN, so a keyspace of millions
costs one page of it."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import redis
from redis.cluster import RedisCluster

from supergraph_messaging.conf import conf
from supergraph_messaging.redis.keys import escape_glob

#: Streams listed at most (and keys a listing walks at most, in SCAN steps of 1,000).
STREAM_LIMIT = 200
SCAN_BUDGET = 200_000
#: Before Redis 7, XINFO GROUPS has no lag: it is counted, entry by entry, when at most this many.
COUNTED_LAG_LIMIT = 100


@dataclass
class GroupInfo:
    name: str
    consumers: int
    pending: int
    lag: int | None  # None: Redis cannot tell (entries trimmed or deleted since the group last read)
    last_delivered: str


@dataclass
class StreamInfo:
    channel: str
    key: str
    length: int
    offset: int
    epoch: str
    dead_letters: int
    groups: list[GroupInfo] = field(default_factory=list)

    @property
    def pending(self) -> int:
        return sum(g.pending for g in self.groups)


def text(raw: Any) -> str:
    """A Redis reply's bytes as text (undecodable bytes escaped, not lost)."""
    return raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else str(raw)


def channel_of(key: str) -> str:
    """``{prefix}sgm:{{channel}}:stream`` (or its ``:dead``) -> the channel as the app names it (without
    CHANNEL_PREFIX)."""
    inner = key[len(conf.key_prefix) + len("sgm:{"):key.rindex("}:stream")]
    return inner[len(conf.channel_prefix):] if inner.startswith(conf.channel_prefix) else inner


def stream_keys(conn: redis.Redis, suffix: str = "") -> list[str]:
    """The channels' stream keys (``suffix=":dead"``: their dead-letter streams), sorted, at most STREAM_LIMIT."""
    match = escape_glob(conf.key_prefix) + "sgm:{*}:stream" + suffix
    if isinstance(conn, RedisCluster):  # every primary, one after the other (SCAN cursors are per node)
        return sorted(text(k) for k in islice(conn.scan_iter(match=match, count=1000, _type="stream"),
                                               STREAM_LIMIT))
    found: list[str] = []
    cursor, walked = 0, 0
    while True:
        cursor, batch = conn.scan(cursor, match=match, count=1000, _type="stream")
        found.extend(text(k) for k in batch)
        walked += 1000
        if not cursor or len(found) >= STREAM_LIMIT or walked >= SCAN_BUDGET:
            return sorted(found)[:STREAM_LIMIT]


def describe(conn: redis.Redis, keys: list[str]) -> list[StreamInfo]:
    """One round trip for the lengths, meta and dead letters, one XINFO GROUPS per stream."""
    pipe = conn.pipeline(transaction=False)
    for key in keys:
        pipe.xlen(key)
        pipe.hgetall(key[: -len("stream")] + "meta")
        pipe.xlen(key + ":dead")
    replies = pipe.execute()
    out: list[StreamInfo] = []
    for i, key in enumerate(keys):
        length, meta, dead = replies[3 * i: 3 * i + 3]
        meta = {text(k): text(v) for k, v in meta.items()}
        info = StreamInfo(channel=channel_of(key), key=key, length=int(length), offset=int(meta.get("s", 0)),
                          epoch=meta.get("e", ""), dead_letters=int(dead))
        for group in conn.xinfo_groups(key):
            group = {text(k): v for k, v in group.items()}
            last = text(group.get("last-delivered-id", b""))
            lag = int(group["lag"]) if group.get("lag") is not None else None
            if "lag" not in group:  # Redis 6 (make demo's embedded one): no lag field
                lag = counted_lag(conn, key, last)
            info.groups.append(GroupInfo(name=text(group["name"]), consumers=int(group["consumers"]),
                                         pending=int(group["pending"]), lag=lag, last_delivered=last))
        out.append(info)
    return out


def counted_lag(conn: redis.Redis, key: str, last_delivered: str) -> int | None:
    """The entries after ``last_delivered``, counted by reading at most COUNTED_LAG_LIMIT + 1 of them: exact
    up to the limit, None (unknown, as Redis 7 says when it cannot tell) beyond it."""
    try:
        ms, seq = (int(part) for part in last_delivered.split("-"))
    except ValueError:
        return None
    after = f"{ms}-{seq + 1}"  # the first possible id after it (XRANGE's "(" needs Redis 6.2)
    counted = len(conn.xrange(key, min=after, max="+", count=COUNTED_LAG_LIMIT + 1) or ())
    return counted if counted <= COUNTED_LAG_LIMIT else None
