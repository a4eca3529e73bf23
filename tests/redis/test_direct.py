"""Commands on the client's own connections (redis/direct.py): what redis-py would do, without its machinery.

Each test runs against a private redis-server: a restart, a script flush, a
cancelled read, a failover generation, threads and a fork.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
from typing import Any

import pytest
import redis

from supergraph_messaging.redis import scripts
from supergraph_messaging.redis.client import RedisClient
from supergraph_messaging.redis.direct import ASYNC_IDLE, DirectCommands, pack
from tests.support.redis_server import RedisServer


def direct_of(server: RedisServer) -> tuple[RedisClient, DirectCommands]:
    client = RedisClient(server.url)
    assert client.direct is not None
    return client, client.direct


def named_clients(server: RedisServer) -> int:
    return sum(1 for entry in server.client().client_list() if entry["cmd"] != "client|list")


def test_pack_is_resp() -> None:
    assert pack((b"GET", "ké")) == b"*2\r\n$3\r\nGET\r\n$3\r\nk\xc3\xa9\r\n"
    assert pack((b"SET", b"k", 42)) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n42\r\n"


def test_a_thread_reuses_one_connection_and_survives_a_restart(own_redis: RedisServer) -> None:
    _client, direct = direct_of(own_redis)
    own_redis.client().set("k", b"v")
    before = named_clients(own_redis)
    for _ in range(50):
        assert direct.execute(pack((b"GET", "k"))) == b"v"
    assert named_clients(own_redis) == before + 1
    own_redis.restart()
    own_redis.client().set("k", b"after")
    # The reused connection is dead: one retry on a fresh one, as redis-py's own retry does.
    assert direct.execute(pack((b"GET", "k"))) == b"after"


def test_an_unreachable_redis_raises_a_connection_error(own_redis: RedisServer) -> None:
    _client, direct = direct_of(own_redis)
    own_redis.stop()
    with pytest.raises(redis.exceptions.ConnectionError):
        direct.execute(pack((b"GET", "k")))


def test_an_error_reply_leaves_the_connection_in_step(own_redis: RedisServer) -> None:
    _client, direct = direct_of(own_redis)
    own_redis.client().set("k", b"v")
    with pytest.raises(redis.exceptions.ResponseError):
        direct.execute(pack((b"INCR", "k")))
    conn = direct._thread.conn
    assert direct.execute(pack((b"GET", "k"))) == b"v"
    assert direct._thread.conn is conn


def test_a_script_redis_forgot_is_loaded_again(own_redis: RedisServer) -> None:
    client, _direct = direct_of(own_redis)
    own_redis.client().set("k", b"v")
    assert client.script(scripts.ACQUIRE, ["k", "k~lease"], ["token", 1000]) == b"v"
    own_redis.client().script_flush()
    assert client.script(scripts.ACQUIRE, ["k", "k~lease"], ["token", 1000]) == b"v"


def test_a_failover_generation_replaces_the_connection(own_redis: RedisServer) -> None:
    client, direct = direct_of(own_redis)
    own_redis.client().set("k", b"v")
    direct.execute(pack((b"GET", "k")))
    first = direct._thread.conn
    client.generation += 1
    assert direct.execute(pack((b"GET", "k"))) == b"v"
    assert direct._thread.conn is not first
    assert first._sock is None  # closed, not leaked


def test_threads_have_connections_of_their_own(own_redis: RedisServer) -> None:
    _client, direct = direct_of(own_redis)
    conn = own_redis.client()
    conn.mset({f"k{i}": f"v{i}" for i in range(8)})
    wrong: list[Any] = []

    def read(i: int) -> None:
        for _ in range(200):
            reply = direct.execute(pack((b"GET", f"k{i}")))
            if reply != f"v{i}".encode():
                wrong.append(reply)

    threads = [threading.Thread(target=read, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []


def test_a_forked_child_does_not_share_the_parents_connection(own_redis: RedisServer) -> None:
    _client, direct = direct_of(own_redis)
    own_redis.client().set("k", b"v")
    assert direct.execute(pack((b"GET", "k"))) == b"v"
    parent = direct._thread.conn
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=lambda: queue.put(direct.execute(pack((b"GET", "k")))))
    child.start()
    assert queue.get(timeout=10) == b"v"
    child.join(10)
    assert child.exitcode == 0
    # The parent's connection is still its own and still in step.
    assert direct.execute(pack((b"GET", "k"))) == b"v"
    assert direct._thread.conn is parent


async def test_async_connections_are_reused_per_loop_and_survive_a_restart(own_redis: RedisServer) -> None:
    _client, direct = direct_of(own_redis)
    own_redis.client().set("k", b"v")
    before = named_clients(own_redis)
    replies = await asyncio.gather(*(direct.aexecute(pack((b"GET", "k"))) for _ in range(10)))
    assert replies == [b"v"] * 10
    for _ in range(20):
        assert await direct.aexecute(pack((b"GET", "k"))) == b"v"
    assert named_clients(own_redis) <= before + 10
    own_redis.restart()
    own_redis.client().set("k", b"after")
    assert await direct.aexecute(pack((b"GET", "k"))) == b"after"


async def test_a_cancelled_read_never_hands_its_reply_to_the_next_command(own_redis: RedisServer) -> None:
    _client, direct = direct_of(own_redis)
    own_redis.client().set("k", b"v")
    blocked = asyncio.ensure_future(direct.aexecute(pack((b"BLPOP", "empty-list", 1))))
    await asyncio.sleep(0.2)
    blocked.cancel()
    with pytest.raises(asyncio.CancelledError):
        await blocked
    assert direct._loop_idle()[0] == []  # its connection is closed, not kept
    own_redis.client().rpush("empty-list", b"late")  # were the BLPOP's connection reused, GET would read this
    for _ in range(5):
        assert await direct.aexecute(pack((b"GET", "k"))) == b"v"


async def test_an_async_error_reply_keeps_the_connection_and_scripts_reload(own_redis: RedisServer) -> None:
    client, direct = direct_of(own_redis)
    own_redis.client().set("k", b"v")
    with pytest.raises(redis.exceptions.ResponseError):
        await direct.aexecute(pack((b"INCR", "k")))
    assert await direct.aexecute(pack((b"GET", "k"))) == b"v"
    own_redis.client().script_flush()
    assert await client.ascript(scripts.ACQUIRE, ["k", "k~lease"], ["token", 1000]) == b"v"


async def test_a_burst_keeps_at_most_the_idle_bound(own_redis: RedisServer) -> None:
    _client, direct = direct_of(own_redis)
    own_redis.client().set("k", b"v")
    await asyncio.gather(*(direct.aexecute(pack((b"GET", "k"))) for _ in range(ASYNC_IDLE + 20)))
    assert len(direct._loop_idle()[0]) == ASYNC_IDLE
    await asyncio.sleep(0.2)
    assert named_clients(own_redis) <= ASYNC_IDLE + 1


def test_a_cluster_client_has_none() -> None:
    assert RedisClient("redis+cluster://127.0.0.1:7000").direct is None
