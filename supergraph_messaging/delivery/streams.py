"""The durable log: one Redis Stream per channel, appended and published in one atomic step.

The script has the shape of Centrifugo's history script: it assigns the
channel's next offset, keeps an epoch that changes when the history is lost,
appends to the stream, remembers the outbox id so that a relay
killed between "sent" and "marked relayed" cannot publish twice, and
PUBLISHes the payload with ``"_position": {"offset", "epoch"}`` spliced in.
Plain Pub/Sub subscribers, in any language, see the same channel as before.

History is lost when Redis restarts without persistence (the meta hash is
gone) or when a failover drops writes the old primary had acknowledged (the
meta hash is behind). The second is caught by the appending process: it
passes the last (epoch, offset) Redis gave it for the channel, and a counter
below that offset under the same epoch means offsets would be handed out a
second time for other events. Either way the channel gets a new epoch, so a
resuming client learns it cannot be recovered instead of being given reused
offsets.

On a Cluster each channel's stream lives on the node of its slot, and a
PUBLISH made there reaches the other nodes over the cluster bus, one link per
node: events of two channels could overtake each other. There the script
returns the message instead, and one connection publishes the batch in
commit order, so subscribers see the order of the outbox, as on one node.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Any

import redis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from supergraph_messaging.conf import conf
from supergraph_messaging.delivery import replication
from supergraph_messaging.exceptions import NotReplicated
from supergraph_messaging.redis import scripts
from supergraph_messaging.redis.errors import REDIS_ERRORS
from supergraph_messaging.redis.keys import full_channel, is_sharded

logger = logging.getLogger("supergraph_messaging.streams")

#: Events appended to a stream and trimmed before every consumer group acknowledged them (hard cap).
counters = {"trimmed_unread": 0}

# KEYS: stream, meta, idem   ARGV: event id, payload (a JSON object), (unused), channel, epoch if new,
# ids kept (0: a fresh id nobody can send twice, nothing to remember), 1 publish | 0 return the message,
# the epoch and offset this process last got for the channel ('' and 0: none)
# -> {offset, epoch, 1 appended now | 0 already appended, receivers (or the message to publish)}
APPEND = """
local epoch = redis.call('HGET', KEYS[2], 'e')
if not epoch or (epoch == ARGV[8] and tonumber(redis.call('HGET', KEYS[2], 's') or '0') < tonumber(ARGV[9])) then
  -- no history, or less of it than this process was given offsets from: it was lost (a restart without
  -- persistence, a failover that dropped acknowledged writes). A new epoch: offsets are never reused.
  epoch = ARGV[5]
  redis.call('HSET', KEYS[2], 'e', epoch)
end
local window = tonumber(ARGV[6])
if window > 0 then
  local seen = redis.call('ZSCORE', KEYS[3], ARGV[1])
  if seen then
    redis.call('HINCRBY', KEYS[2], 'r', 1)  -- a write, so that the relay's WAIT covers the first append
    return {tonumber(seen), epoch, 0, 0}
  end
end
local offset = redis.call('HINCRBY', KEYS[2], 's', 1)
-- 'b': the payload bytes appended before this entry, so that a resume knows what it would read (history.py)
local before = redis.call('HINCRBY', KEYS[2], 'b', #ARGV[2]) - #ARGV[2]
redis.call('XADD', KEYS[1], offset .. '-0', 'o', ARGV[1], 'd', ARGV[2], 'b', before)
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
if ARGV[7] == '0' then return {offset, epoch, 1, data} end
local receivers = redis.call('PUBLISH', ARGV[4], data)
return {offset, epoch, 1, receivers}
"""

# KEYS: stream, meta   ARGV: history to keep, hard cap, an epoch for a history cut short
# -> {first offset kept, entries the slowest group has not acknowledged, entries trimmed unacknowledged}
# A group that lost entries finds ``reset:<group>`` (how many) in the meta hash: see consumer_groups.py.
TRIM = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, 0, 0} end
local last = tonumber(redis.call('HGET', KEYS[2], 's') or '0')
local slowest = last + 1
local positions = {}
for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local info = {}
  for i = 1, #group, 2 do info[group[i]] = group[i + 1] end
  local position = tonumber(string.match(info['last-delivered-id'], '^(%d+)')) + 1
  if tonumber(info['pending']) > 0 then
    local oldest = redis.call('XPENDING', KEYS[1], info['name'])[2]
    position = math.min(position, tonumber(string.match(oldest, '^(%d+)')))
  end
  slowest = math.min(slowest, position)
  positions[info['name']] = position
end
local floor = math.min(last - tonumber(ARGV[1]) + 1, slowest)
local hard = last - tonumber(ARGV[2]) + 1
local lost = 0
if hard > floor then
  -- Cut exactly, and count only entries still in the stream: an earlier cut counted the ones before.
  local head = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
  local first = head and tonumber(string.match(head[1], '^(%d+)')) or hard
  lost = math.max(0, hard - math.max(slowest, first))
  for name, position in pairs(positions) do
    local cut = hard - math.max(position, first)
    if cut > 0 then redis.call('HINCRBY', KEYS[2], 'reset:' .. name, cut) end
  end
  if lost > 0 then redis.call('HSET', KEYS[2], 'e', ARGV[3]) end
  redis.call('XTRIM', KEYS[1], 'MINID', hard .. '-0')
elseif floor > 1 then
  redis.call('XTRIM', KEYS[1], 'MINID', '~', floor .. '-0')
end
return {floor, last + 1 - slowest, lost}
"""

#: A process trims a channel's stream once per this many appends to it (and the relay once per round).
TRIM_EVERY = 100

#: Errors on a direct node connection after which the slot map may be stale.
_NODE_ERRORS: tuple[type[BaseException], ...] = (*REDIS_ERRORS, redis.exceptions.AskError)

#: Outbox ids remembered per channel for deduplication (far more than one relay batch).
IDEMPOTENCY_WINDOW = 10_000


def keys(channel: str) -> list[str]:
    """The stream, meta and idempotency keys of ``channel``, hash-tagged into one Cluster slot."""
    tag = "{" + full_channel(channel) + "}"
    prefix = conf.key_prefix
    return [f"{prefix}sgm:{tag}:stream", f"{prefix}sgm:{tag}:meta", f"{prefix}sgm:{tag}:idem"]


def new_epoch() -> str:
    return os.urandom(6).hex()


#: The last (epoch, offset) Redis gave this process per stream key: see the module's docstring.
_given: dict[str, tuple[str, int]] = {}


def append_args(channel: str, outbox_id: str, data: str, window: int = IDEMPOTENCY_WINDOW,
                publish: bool = True) -> tuple[list[str], list[Any]]:
    script_keys = keys(channel)
    epoch, offset = _given.get(script_keys[0], ("", 0))
    return script_keys, [outbox_id, data, conf.stream_maxlen, full_channel(channel), new_epoch(), window,
                         1 if publish else 0, epoch, offset]


def _remember(stream: str, reply: Any) -> None:
    epoch = reply[1].decode() if isinstance(reply[1], bytes) else str(reply[1])
    offset = int(reply[0])
    known = _given.get(stream)
    if known is None or known[0] != epoch or known[1] < offset:
        _given[stream] = epoch, offset


_appends_since_trim: dict[str, int] = {}
_unlogged_losses: dict[str, tuple[int, float]] = {}  # channel: (lost since the last line, when logged)


def trim(conn: Any, channel: str) -> tuple[int, int]:
    """Trim ``channel``'s stream to ``STREAM_MAXLEN`` entries of history, but never past an entry a consumer
    group has not acknowledged, unless the stream is over ``STREAM_HARD_MAXLEN``. Returns (entries the
    slowest group has not acknowledged, entries lost to the hard cap).

    A count-only trim dropped 35,469 of 50,000 events a lagging group had not read, silently. A loss to
    the hard cap is logged at ERROR, counted, and gives the channel a new epoch (resuming clients get
    ``recovered: false``); the consumer groups see the offsets jump and send ``stream_reset``.
    """
    return _trimmed(channel, scripts.run(conn, TRIM, keys(channel)[:2], _trim_args()))


async def atrim(conn: Any, channel: str) -> tuple[int, int]:
    return _trimmed(channel, await scripts.arun(conn, TRIM, keys(channel)[:2], _trim_args()))


def _trim_args() -> list[Any]:
    return [conf.stream_maxlen, max(conf.stream_hard_maxlen, conf.stream_maxlen), new_epoch()]


def _trimmed(channel: str, reply: Any) -> tuple[int, int]:
    _appends_since_trim[channel] = 0
    lag, lost = int(reply[1]), int(reply[2])
    if lost:
        counters["trimmed_unread"] += lost
        unlogged, logged_at = _unlogged_losses.get(channel, (0, 0.0))
        now = time.monotonic()
        if now - logged_at >= 10:  # one line per channel per 10 s while a flood goes on
            logger.error("The stream of %r passed STREAM_HARD_MAXLEN (%d): %d event(s) trimmed from it had not "
                         "been acknowledged by every consumer group; the channel has a new epoch.", channel,
                         max(conf.stream_hard_maxlen, conf.stream_maxlen), unlogged + lost)
            _unlogged_losses[channel] = (0, now)
        else:
            _unlogged_losses[channel] = (unlogged + lost, logged_at)
    return lag, lost


def trim_due(channel: str, appended: int = 1) -> bool:
    count = _appends_since_trim.get(channel, 0) + appended
    _appends_since_trim[channel] = count
    return count >= TRIM_EVERY


def _clustered(conn: Any) -> bool:
    return isinstance(conn, RedisCluster | AsyncRedisCluster)


def append(conn: redis.Redis, channel: str, outbox_id: str, data: str) -> tuple[int, str, bool]:
    """Append + publish one event; returns (offset, epoch, published now)."""
    offset, epoch, published, _receivers = append_many(conn, [(channel, outbox_id, data)])[0]
    return offset, epoch, published


def publish(conn: redis.Redis, channel: str, data: str) -> int:
    """A durable publish without an outbox row (a producer without a database): returns receivers."""
    cluster = _clustered(conn)
    script_keys, args = append_args(channel, os.urandom(12).hex(), data, window=0, publish=not cluster)
    reply = scripts.run(conn, APPEND, script_keys, args)
    _remember(script_keys[0], reply)
    if trim_due(channel):
        trim(conn, channel)
    if not cluster:
        return int(reply[3])
    if is_sharded(channel):
        return int(conn.spublish(full_channel(channel), reply[3]))
    return int(conn.publish(full_channel(channel), reply[3]))


async def apublish(conn: Any, channel: str, data: str) -> int:
    cluster = _clustered(conn)
    script_keys, args = append_args(channel, os.urandom(12).hex(), data, window=0, publish=not cluster)
    reply = await scripts.arun(conn, APPEND, script_keys, args)
    _remember(script_keys[0], reply)
    if trim_due(channel):
        await atrim(conn, channel)
    if not cluster:
        return int(reply[3])
    if is_sharded(channel):
        return int(await conn.spublish(full_channel(channel), reply[3]))
    return int(await conn.publish(full_channel(channel), reply[3]))


def append_many(conn: Any, items: list[tuple[str, str, str]]) -> list[tuple[int, str, bool, int]]:
    """Append + publish (channel, outbox id, data) items in order, pipelined in one round trip per node,
    and replicated as ``DURABLE_REPLICAS`` asks (:mod:`.replication`).

    Each result is (offset, epoch, published, receivers); ``published`` is false for an id appended before.
    Raises :class:`~.exceptions.NotReplicated` (after publishing) when too few replicas acknowledged.
    """
    cluster = _clustered(conn)
    calls = [append_args(channel, outbox_id, data, publish=not cluster) for channel, outbox_id, data in items]
    if not cluster:
        replies, short = _append_on(conn, calls, f"redis:{id(conn.connection_pool)}")
        for (script_keys, _args), reply in zip(calls, replies, strict=True):
            _remember(script_keys[0], reply)  # also when refused: the offsets were published
        if short is not None:
            raise short
        return _results(replies)
    # One pipeline per primary, on a plain connection to it: WAIT must follow the appends on their
    # connection, which redis-py's cluster pipeline cannot route.
    by_node: dict[str, list[int]] = {}
    for i, (script_keys, _args) in enumerate(calls):
        by_node.setdefault(conn.get_node_from_key(script_keys[0]).name, []).append(i)
    replies = [None] * len(calls)
    short = None
    for name, indexes in by_node.items():
        try:
            node_replies, node_short = _append_on(conn.get_redis_connection(conn.get_node(node_name=name)),
                                                  [calls[i] for i in indexes], name)
        except _NODE_ERRORS:
            _refresh_slots(conn)
            raise
        short = short or node_short
        for i, reply in zip(indexes, node_replies, strict=True):
            replies[i] = reply
            _remember(calls[i][0][0], reply)
    results = _results(_publish_in_order(conn, items, replies))
    if short is not None:
        raise short
    return results


def _append_on(conn: redis.Redis, calls: list[tuple[list[str], list[Any]]],
               node: str) -> tuple[list[Any], NotReplicated | None]:
    """The scripts on one primary, between ROLE and WAIT (:mod:`.replication`): their replies, and what
    to raise (after publishing them) when too few replicas acknowledged."""

    def run() -> tuple[list[Any], NotReplicated | None]:
        pipe = conn.pipeline(transaction=False)
        waiting = replication.begin(conn, pipe, node)
        for script_keys, args in calls:
            pipe.evalsha(scripts.sha(APPEND), len(script_keys), *script_keys, *args)
        replication.end(pipe, waiting)
        return replication.check(list(pipe.execute()), node, waiting)

    try:
        return run()
    except redis.exceptions.NoScriptError:  # a restarted Redis forgot the script
        conn.script_load(APPEND)
        return run()


def _refresh_slots(conn: Any) -> None:
    """After an error on a direct node connection: redis-py's own retries did not see it, so let its
    next command load the slot map afresh (a failover or a resharding moved the slot)."""
    with contextlib.suppress(*REDIS_ERRORS, redis.exceptions.RedisClusterException):
        conn.nodes_manager.initialize()


def _results(replies: list[Any]) -> list[tuple[int, str, bool, int]]:
    return [(int(offset), epoch.decode() if isinstance(epoch, bytes) else str(epoch), bool(published),
             int(receivers)) for offset, epoch, published, receivers in replies]


def _publish_in_order(conn: Any, items: list[tuple[str, str, str]], replies: list[Any]) -> list[Any]:
    """PUBLISH the messages the scripts returned, in order, down one connection (see the module's docstring)."""
    fresh = [i for i, reply in enumerate(replies) if int(reply[2])]
    if not fresh:
        return replies
    sharded = [i for i in fresh if is_sharded(items[i][0])]
    plain = [i for i in fresh if not is_sharded(items[i][0])] if sharded else fresh
    counts: dict[int, int] = {}
    if plain:
        node = conn.get_default_node()
        pipe = conn.get_redis_connection(node).pipeline(transaction=False)
        for i in plain:
            pipe.publish(full_channel(items[i][0]), replies[i][3])
        try:
            counts.update(zip(plain, pipe.execute(), strict=True))
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            conn.replace_default_node()  # the next batch goes through another node
            raise
    if sharded:
        # SHARDED_CHANNELS: each to its slot's node, in order per node, so in order per channel only.
        pipe = conn.pipeline(transaction=False)
        for i in sharded:
            pipe.execute_command("SPUBLISH", full_channel(items[i][0]), replies[i][3])
        counts.update(zip(sharded, pipe.execute(), strict=True))
    replies = list(replies)
    for i, count in counts.items():
        replies[i] = [*replies[i][:3], count]
    return replies
