"""The publisher's socket reader and writer, on a socket pair: replies split across reads, a close,
bytes that are no PUBLISH reply, a write to a closed peer."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
import redis

from supergraph_messaging.delivery._wire import ClosedBeforeSend, Wire


@pytest.fixture
def pair() -> Iterator[tuple[Wire, socket.socket]]:
    ours, theirs = socket.socketpair()
    ours.settimeout(1.0)  # non-blocking underneath, as redis-py's sockets with a timeout are
    yield Wire(ours, 1.0), theirs
    ours.close()
    theirs.close()


def test_replies_split_across_reads_come_out_whole_and_in_order(pair: tuple[Wire, socket.socket]) -> None:
    wire, peer = pair
    assert wire.replies() == []
    peer.sendall(b":1\r")
    assert wire.replies() == []
    peer.sendall(b"\n:0\r\n-ERR no such\r\n:12")
    first, second, error = wire.replies(wait=1.0)
    assert (first, second) == (1, 0) and isinstance(error, redis.ResponseError) and str(error) == "ERR no such"
    peer.sendall(b"\r\n")
    assert wire.replies(wait=1.0) == [12]


def test_a_close_and_a_reply_that_is_not_a_publish_reply_are_connection_errors(
        pair: tuple[Wire, socket.socket]) -> None:
    wire, peer = pair
    peer.sendall(b"+OK\r\n")
    with pytest.raises(redis.ConnectionError, match="unexpected reply b'\\+OK'"):
        wire.replies(wait=1.0)
    peer.close()
    with pytest.raises(redis.ConnectionError, match="closed by server"):
        wire.replies()


def test_writes_arrive_whole_and_a_write_to_a_closed_peer_says_nothing_was_sent(
        pair: tuple[Wire, socket.socket]) -> None:
    wire, peer = pair
    big = b"x" * 1_000_000  # more than the socket buffer: written in parts while the peer reads
    packed = b"".join(redis.Connection().pack_command("PUBLISH", "sgm:big", big))
    received = bytearray()

    def read() -> None:
        while len(received) < len(packed):
            received.extend(peer.recv(1 << 16))

    reader = threading.Thread(target=read)
    reader.start()
    wire.send(packed)
    reader.join(5)
    assert bytes(received) == packed
    peer.close()
    with pytest.raises(ClosedBeforeSend):
        wire.send(b"*2\r\n$4\r\nPING\r\n$1\r\n1\r\n")


def test_closed_by_peer_sees_the_close_and_not_waiting_replies(pair: tuple[Wire, socket.socket]) -> None:
    """What the publisher asks before each send: replies waiting are no reason to read, a close is."""
    wire, peer = pair
    assert not wire.closed_by_peer()
    peer.sendall(b":1\r\n:2\r\n")
    assert not wire.closed_by_peer()
    peer.shutdown(socket.SHUT_WR)
    assert wire.closed_by_peer()
    assert wire.replies() == [1, 2]  # what came before the close is still read
    with pytest.raises(redis.ConnectionError, match="closed by server"):
        wire.replies()
