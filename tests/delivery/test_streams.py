from __future__ import annotations

import json
from typing import Any

from supergraph_messaging.delivery import streams
from tests.support.redis_server import RedisServer


def test_append_assigns_offsets_splices_position_and_is_idempotent(redis_conn: Any) -> None:
    pubsub = redis_conn.pubsub()
    pubsub.subscribe("orders")
    assert pubsub.get_message(timeout=2)["type"] == "subscribe"
    first = streams.append(redis_conn, "orders", "id-1", '{"n":1}')
    again = streams.append(redis_conn, "orders", "id-1", '{"n":1}')  # a relay that died before marking the row
    second = streams.append(redis_conn, "orders", "id-2", "{}")
    assert first[0] == 1 and first[2] and second[0] == 2 and second[2]
    assert again == (1, first[1], False)
    assert first[1] == second[1]  # one epoch
    stream, _meta, _idem = streams.keys("orders")
    entries = redis_conn.xrange(stream)
    assert [e[0] for e in entries] == [b"1-0", b"2-0"] and entries[0][1][b"o"] == b"id-1"
    published = [json.loads(pubsub.get_message(timeout=2)["data"]) for _ in range(2)]
    assert published == [{"n": 1, "_position": {"offset": 1, "epoch": first[1]}},
                         {"_position": {"offset": 2, "epoch": first[1]}}]
    assert pubsub.get_message(timeout=0.2) is None  # the re-send published nothing
    pubsub.close()


def test_history_lost_means_a_new_epoch(own_redis: RedisServer) -> None:
    conn = own_redis.client()
    offset, epoch, _ = streams.append(conn, "orders", "a", "{}")
    own_redis.restart()  # no persistence: the stream and its meta are gone
    conn = own_redis.client()
    offset2, epoch2, _ = streams.append(conn, "orders", "b", "{}")
    assert (offset, offset2) == (1, 1) and epoch != epoch2


def test_history_cut_short_means_a_new_epoch_and_no_offset_is_given_twice(own_redis: RedisServer) -> None:
    """A failover that dropped acknowledged appends leaves the meta hash behind the offsets this process was
    given: the next append starts a new epoch instead of handing offsets 3 and 4 out again."""
    conn = own_redis.client()
    given = [streams.append(conn, "cut", f"e{i}", "{}") for i in range(4)]
    assert [g[0] for g in given] == [1, 2, 3, 4] and len({g[1] for g in given}) == 1
    stream, meta, _idem = streams.keys("cut")
    conn.hset(meta, "s", 2)  # the promoted replica had not received appends 3 and 4
    conn.delete(stream)  # and had entries 1 and 2 only
    conn.xadd(stream, {"o": "e0", "d": "{}"}, id="1-0")
    conn.xadd(stream, {"o": "e1", "d": "{}"}, id="2-0")
    offset, epoch, appended = streams.append(conn, "cut", "e4", "{}")
    assert appended and epoch != given[0][1], "offset reused under the same epoch"
    offset2, epoch2, _ = streams.append(conn, "cut", "e5", "{}")
    assert (offset, epoch2) == (3, epoch) and offset2 == 4  # the new epoch goes on as usual


def test_append_many_survives_a_forgotten_script(own_redis: RedisServer) -> None:
    conn = own_redis.client()
    conn.script_flush()
    results = streams.append_many(conn, [("a", "1", "{}"), ("b", "2", "{}"), ("a", "3", "{}")])
    assert [r[0] for r in results] == [1, 1, 2] and all(r[2] for r in results)
