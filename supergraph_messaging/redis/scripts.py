"""Lua scripts for lease-guarded cache fills (see "Scaling Memcache at Facebook" §3.2.1).

A fill takes a lease (a token in ``<key>~lease``) on a miss and may write its
value only while that lease is still its own. Invalidation deletes the key
and the lease together, so a fill that read the source before an
invalidation can never write its (old) value after it.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any

import redis
import redis.asyncio as aioredis

# KEYS: key, lease   ARGV: token, lease ms
# -> the value (bytes: a hit); 2: the lease is ours (fill); 0: someone else fills (wait)
# Every sync read of @redis_cache is this script, not a GET: a miss then takes its lease in the same round
# trip, and costs two round trips in all (this, FILL), as a plain GET + SET does. A hit costs what a GET
# costs with redis-py's sync client (73.9 against 73.6 us per call), not with its asyncio one (85 against
# 74 us): async reads GET first, and a miss costs one round trip more.
ACQUIRE = """
local v = redis.call('GET', KEYS[1])
if v then return v end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 2 end
return 0
"""


# ACQUIRE for a near cache (local=True): a hit also says how long the value has left -> {value, pttl}
ACQUIRE_TTL = """
local v = redis.call('GET', KEYS[1])
if v then return {v, redis.call('PTTL', KEYS[1])} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 2 end
return 0
"""


def _write_and_drop_lease(value: int, ttl: int) -> str:
    """Lua: SET KEYS[1] to ARGV[value] (PX ARGV[ttl] unless 0), delete the lease KEYS[2], return 1."""
    return f"""
if tonumber(ARGV[{ttl}]) > 0 then
  redis.call('SET', KEYS[1], ARGV[{value}], 'PX', ARGV[{ttl}])
else
  redis.call('SET', KEYS[1], ARGV[{value}])
end
redis.call('DEL', KEYS[2])
return 1
"""


# KEYS: key, lease   ARGV: token, value, ttl ms (0: no expiry)  -> 1 written, 0 lease lost
FILL = "\nif redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end" + _write_and_drop_lease(value=2, ttl=3)

# KEYS: key, lease, version   ARGV: value, ttl ms (0: no expiry), stamp ('' : none)
# -> a write that cancels any fill in progress and records which change wrote it (CacheManager.set;
# one script, one step on every topology: redis-py's asyncio MULTI is unreliable on a Cluster)
SET = _write_and_drop_lease(value=1, ttl=2).removesuffix("return 1\n") + """
if ARGV[3] == '' then
  redis.call('DEL', KEYS[3])
elseif tonumber(ARGV[2]) > 0 then
  redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[2])
else
  redis.call('SET', KEYS[3], ARGV[3])
end
return 1
"""

# KEYS: key, lease, version   ARGV: stamp  -> delete the value (and its lease and stamp) unless the change
# with this stamp wrote it; returns 1 if a value was deleted
INVALIDATE_UNLESS = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[3]) == ARGV[1] then return 0 end
redis.call('UNLINK', KEYS[2], KEYS[3])
return redis.call('UNLINK', KEYS[1])
"""

# KEYS: lease   ARGV: token  -> give the lease back (the fill failed or returned None)
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: key   ARGV: value  -> delete the key only if it still holds exactly this (undecodable) value
DISCARD = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

@functools.cache
def sha(src: str) -> str:
    return hashlib.sha1(src.encode()).hexdigest()


def run(client: redis.Redis, src: str, keys: list[str], args: list[Any]) -> Any:
    """EVALSHA, falling back to EVAL when Redis forgot the script (a restart)."""
    try:
        return client.evalsha(sha(src), len(keys), *keys, *args)
    except redis.exceptions.NoScriptError:
        return client.eval(src, len(keys), *keys, *args)


async def arun(client: aioredis.Redis, src: str, keys: list[str], args: list[Any]) -> Any:
    try:
        return await client.evalsha(sha(src), len(keys), *keys, *args)
    except redis.exceptions.NoScriptError:
        return await client.eval(src, len(keys), *keys, *args)
