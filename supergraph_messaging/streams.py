"""The durable log: one Redis Stream per channel, appended and published in one atomic step.

The script has the shape of Centrifugo's history script: it assigns the
channel's next offset, keeps an epoch that changes when the history is lost
(Redis restarted without persistence), appends to the stream (trimmed
approximately to ``STREAM_MAXLEN``), remembers the outbox id so that a relay
killed between "sent" and "marked relayed" cannot publish twice, and
PUBLISHes the payload with ``"_position": {"offset", "epoch"}`` spliced in.
Plain Pub/Sub subscribers, in any language, see the same channel as before.
"""

from __future__ import annotations

import os
from typing import Any

import redis

from . import scripts
from .conf import conf
from .keys import full_channel

# KEYS: stream, meta, idem   ARGV: event id, payload (a JSON object), maxlen, channel, epoch if new,
# ids kept (0: a fresh id nobody can send twice, nothing to remember)
# -> {offset, epoch, 1 published | 0 already published, receivers}
APPEND = """
local epoch = redis.call('HGET', KEYS[2], 'e')
if not epoch then
  epoch = ARGV[5]
  redis.call('HSET', KEYS[2], 'e', epoch)
end
local window = tonumber(ARGV[6])
if window > 0 then
  local seen = redis.call('ZSCORE', KEYS[3], ARGV[1])
  if seen then return {tonumber(seen), epoch, 0, 0} end
end
local offset = redis.call('HINCRBY', KEYS[2], 's', 1)
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], offset .. '-0', 'o', ARGV[1], 'd', ARGV[2])
if window > 0 then
  redis.call('ZADD', KEYS[3], offset, ARGV[1])
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -(window + 1))
end
local position = '"_position":{"offset":' .. offset .. ',"epoch":"' .. epoch .. '"}'
local data = ARGV[2]
if data == '{}' then
  data = '{' .. position .. '}'
elseif string.sub(data, -1) == '}' then
  data = string.sub(data, 1, -2) .. ',' .. position .. '}'
end
local receivers = redis.call('PUBLISH', ARGV[4], data)
return {offset, epoch, 1, receivers}
"""

#: Outbox ids remembered per channel for deduplication (far more than one relay batch).
IDEMPOTENCY_WINDOW = 10_000


def keys(channel: str) -> list[str]:
    """The stream, meta and idempotency keys of ``channel``, hash-tagged into one Cluster slot."""
    tag = "{" + full_channel(channel) + "}"
    prefix = conf.key_prefix
    return [f"{prefix}sgm:{tag}:stream", f"{prefix}sgm:{tag}:meta", f"{prefix}sgm:{tag}:idem"]


def new_epoch() -> str:
    return os.urandom(6).hex()


def append_args(channel: str, outbox_id: str, data: str,
                window: int = IDEMPOTENCY_WINDOW) -> tuple[list[str], list[Any]]:
    return keys(channel), [outbox_id, data, conf.stream_maxlen, full_channel(channel), new_epoch(), window]


def append(conn: redis.Redis, channel: str, outbox_id: str, data: str) -> tuple[int, str, bool]:
    """Append + publish one event; returns (offset, epoch, published now)."""
    offset, epoch, published, _receivers = scripts.run(conn, APPEND, *append_args(channel, outbox_id, data))
    return int(offset), epoch.decode() if isinstance(epoch, bytes) else str(epoch), bool(published)


def publish(conn: redis.Redis, channel: str, data: str) -> int:
    """A durable publish without an outbox row (a producer without a database): returns receivers."""
    return int(scripts.run(conn, APPEND, *append_args(channel, os.urandom(12).hex(), data, window=0))[3])


async def apublish(conn: Any, channel: str, data: str) -> int:
    return int((await scripts.arun(conn, APPEND, *append_args(channel, os.urandom(12).hex(), data, window=0)))[3])


def append_many(conn: redis.Redis, items: list[tuple[str, str, str]]) -> list[tuple[int, str, bool, int]]:
    """Append + publish (channel, outbox id, data) items in order, pipelined in one round trip.

    Each result is (offset, epoch, published, receivers); ``published`` is false for an id appended before.
    """
    calls = [append_args(channel, outbox_id, data) for channel, outbox_id, data in items]

    def run() -> list[Any]:
        pipe = conn.pipeline(transaction=False)
        for script_keys, args in calls:
            pipe.evalsha(scripts.sha(APPEND), len(script_keys), *script_keys, *args)
        return list(pipe.execute())

    try:
        replies = run()
    except redis.exceptions.NoScriptError:  # a restarted Redis forgot the script
        conn.script_load(APPEND)
        replies = run()
    out = []
    for offset, epoch, published, receivers in replies:
        out.append((int(offset), epoch.decode() if isinstance(epoch, bytes) else str(epoch), bool(published),
                    int(receivers)))
    return out
