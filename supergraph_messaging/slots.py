"""Multi-key work on a Redis Cluster: split per slot, pipelined per node, every primary scanned.

A Cluster refuses a command whose keys live in different slots
(``CROSSSLOT``), and a ``SCAN`` sees one node. redis-py's own multi-key
``UNLINK`` sends one round trip per slot; here the commands for every slot a
batch touches go out in one pipeline per node, and the primaries are
scanned side by side.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .keys import key_slot, lease_key, version_key

SCAN_COUNT = 10_000
UNLINK_BATCH = 1_000


def by_slot(keys: Iterable[str | bytes]) -> dict[int, list[str | bytes]]:
    groups: dict[int, list[str | bytes]] = defaultdict(list)
    for key in keys:
        groups[key_slot(key)].append(key)
    return groups


def _queue_invalidations(pipe: Any, keys: list[str]) -> None:
    """Per slot: the leases first, then the values, so a fill between the two cannot write (its lease is gone)."""
    for group in by_slot(keys).values():
        pipe.execute_command("UNLINK", *[lease_key(str(k), clustered=True) for k in group],
                             *[version_key(str(k), clustered=True) for k in group])
        pipe.execute_command("UNLINK", *group)


def invalidate(conn: Any, keys: list[str]) -> int:
    """Delete ``keys`` and their leases; returns how many values existed."""
    pipe = conn.pipeline(transaction=False)
    _queue_invalidations(pipe, keys)
    return sum(int(n) for n in pipe.execute()[1::2])


async def ainvalidate(conn: Any, keys: list[str]) -> int:
    pipe = conn.pipeline(transaction=False)
    _queue_invalidations(pipe, keys)
    return sum(int(n) for n in (await pipe.execute())[1::2])


def _queue_unlinks(pipe: Any, batch: list[bytes]) -> None:
    for group in by_slot(batch).values():
        pipe.execute_command("UNLINK", *group)


def unlink(conn: Any, batch: list[bytes]) -> int:
    """``UNLINK`` a batch of keys in one pipeline (one command per slot): a node's client, or the cluster's."""
    pipe = conn.pipeline(transaction=False)
    _queue_unlinks(pipe, batch)
    return sum(int(n) for n in pipe.execute())


async def aunlink(conn: Any, batch: list[bytes]) -> int:
    pipe = conn.pipeline(transaction=False)
    _queue_unlinks(pipe, batch)
    return sum(int(n) for n in await pipe.execute())


def unlink_scanned(conn: Any, match: str, unlink: Callable[[list[bytes]], int]) -> int:
    """``SCAN`` ``conn`` for the glob and ``unlink`` what it finds in batches; returns the count."""
    deleted = 0
    batch: list[bytes] = []
    for key in conn.scan_iter(match=match, count=SCAN_COUNT):
        batch.append(key)
        if len(batch) >= UNLINK_BATCH:
            deleted += unlink(batch)
            batch = []
    return deleted + (unlink(batch) if batch else 0)


async def aunlink_scanned(conn: Any, match: str, unlink: Callable[[list[bytes]], Awaitable[int]]) -> int:
    deleted = 0
    batch: list[bytes] = []
    async for key in conn.scan_iter(match=match, count=SCAN_COUNT):
        batch.append(key)
        if len(batch) >= UNLINK_BATCH:
            deleted += await unlink(batch)
            batch = []
    return deleted + (await unlink(batch) if batch else 0)


def unlink_matching(conn: Any, match: str) -> int:
    """``UNLINK`` every key matching the glob on every primary, the primaries side by side."""
    nodes = [conn.get_redis_connection(node) for node in conn.get_primaries()]
    with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
        return sum(pool.map(lambda node: unlink_scanned(node, match, lambda batch: unlink(node, batch)), nodes))


async def aunlink_matching(conn: Any, match: str) -> int:
    return await aunlink_scanned(conn, match, lambda batch: aunlink(conn, batch))
