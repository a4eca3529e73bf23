"""Key and channel names: one format shared by every writer and reader.

``CacheManager(prefix="camera").set("mac:AA")`` and
``@redis_cache(key="camera:mac:{mac_address}")`` must address the same Redis
key, so both go through :func:`full_key`.
"""

from __future__ import annotations

import fnmatch
import functools
import re

from redis import crc

from supergraph_messaging.conf import conf
from supergraph_messaging.exceptions import CacheKeyError

LEASE_SUFFIX = "~lease"
#: Where the stamp of the change that wrote a value lives (CacheSync): an invalidation published for
#: that same change leaves the value alone (see invalidation.py).
VERSION_SUFFIX = "~ver"
_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


def full_key(key: str, prefix: str | None = None) -> str:
    """``KEY_PREFIX`` + ``prefix:`` + key."""
    if prefix:
        key = f"{prefix}:{key}"
    return conf.key_prefix + key


def lease_key(key: str, clustered: bool = False) -> str:
    """Where the fill lease of ``key`` lives (deleted together with the key, in one transaction).

    On a Cluster the lease must share the key's slot, and the value key must
    stay as other readers know it: the lease gets a hash tag that hashes to
    the key's slot (``cam:mac:AA~lease{1a2}``), unless the key has a tag of its
    own, which the suffix keeps.
    """
    return _auxiliary(key, LEASE_SUFFIX, clustered)


def version_key(key: str, clustered: bool = False) -> str:
    """Where the stamp of the change that wrote ``key`` lives; in ``key``'s slot like its lease."""
    return _auxiliary(key, VERSION_SUFFIX, clustered)


def _auxiliary(key: str, suffix: str, clustered: bool) -> str:
    if not clustered or hash_tag(key) is not None:
        return key + suffix
    if "{" in key:  # a brace that is no tag ("a{b", "a{}b"): any suffix changes what is hashed
        return _searched(key, suffix)
    return f"{key}{suffix}{{{_slot_tags()[key_slot(key)]}}}"


@functools.lru_cache(maxsize=1024)
def _searched(key: str, suffix: str) -> str:
    """An auxiliary name in ``key``'s slot for a key with a stray brace, by trying suffixes (rare; ms)."""
    slot, close = key_slot(key), "}" if key.rfind("{") > key.rfind("}") else ""
    for i in range(SLOTS * 64):
        candidate = f"{key}{suffix}{i:x}{close}"
        if key_slot(candidate) == slot:
            return candidate
    raise CacheKeyError(f"No {suffix} key shares the Cluster slot of {key!r}; remove its braces.")


def is_lease(key: str | bytes) -> bool:
    """A lease or a version stamp: a key of the app's own, next to a value, never a value."""
    text = key.decode(errors="replace") if isinstance(key, bytes) else key
    return text.endswith((LEASE_SUFFIX, VERSION_SUFFIX)) or _CLUSTER_AUXILIARY.search(text) is not None


_CLUSTER_AUXILIARY = re.compile(
    "(?:" + re.escape(LEASE_SUFFIX) + "|" + re.escape(VERSION_SUFFIX) + r")(\{[0-9a-f]+\}|[0-9a-f]+\}?)$")
SLOTS = crc.REDIS_CLUSTER_HASH_SLOTS


def hash_tag(key: str) -> str | None:
    """The part of ``key`` Redis Cluster hashes when it is not the whole key (``{...}``, non-empty)."""
    start = key.find("{")
    if start < 0:
        return None
    end = key.find("}", start + 1)
    return key[start + 1:end] if end > start + 1 else None


def key_slot(key: str | bytes) -> int:
    """The Cluster slot of ``key``, as Redis computes it (redis-py's CRC16 of the hash tag or whole key)."""
    return crc.key_slot(key.encode() if isinstance(key, str) else key)


@functools.cache
def _slot_tags() -> tuple[str, ...]:
    """For each slot, the shortest hex string hashing to it (built once, about 0.2 s)."""
    tags: list[str | None] = [None] * SLOTS
    missing, i = SLOTS, 0
    while missing:
        text = format(i, "x")
        slot = crc.key_slot(text.encode())
        if tags[slot] is None:
            tags[slot] = text
            missing -= 1
        i += 1
    return tuple(t for t in tags if t is not None)


def full_channel(channel: str) -> str:
    return conf.channel_prefix + channel


def escape_glob(value: str) -> str:
    """Escape Redis glob characters so a value matches only itself."""
    return _GLOB_SPECIAL.sub(r"\\\1", value)


def is_glob(channel: str) -> bool:
    return "*" in channel or "?" in channel or "[" in channel


def glob_head(pattern: str) -> str:
    """The part of a glob before its first special character: what every channel it matches starts with."""
    for i, char in enumerate(pattern):
        if char in "*?[\\":
            return pattern[:i]
    return pattern


def is_sharded(channel: str) -> bool:
    """An exact channel that ``SHARDED_CHANNELS`` puts on sharded Pub/Sub (when on a Cluster)."""
    patterns = conf.sharded_channels
    return bool(patterns) and _matches_sharded(channel, patterns)


@functools.lru_cache(maxsize=4096)
def _matches_sharded(channel: str, patterns: tuple[str, ...]) -> bool:
    return not is_glob(channel) and any(fnmatch.fnmatchcase(channel, p) for p in patterns)
