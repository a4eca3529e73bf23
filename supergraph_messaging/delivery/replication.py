"""Relayed events reach a replica before their outbox rows count as relayed.

Redis replicates asynchronously: a primary killed right after it acknowledged
an append takes the entry with it, and the replica promoted in its place
never had it. The outbox row was marked relayed, so nothing would send it
again. The relay therefore ends each node's batch with ``WAIT``, on the same
connection as the appends (WAIT covers that connection's writes), and marks
the rows only when ``DURABLE_REPLICAS`` replicas acknowledged.

The number is never lowered to the replicas connected at the moment. During
a ``SENTINEL FAILOVER`` the old primary keeps accepting writes with its
replica gone (being promoted); counting "replicas connected now" made that 0,
and rows relayed there were lost when it resynced from the new primary
(53-76 per failover, measured). While fewer replicas are connected, batches
are refused and their rows stay in the outbox, retried each round; the relay
says so once in the log.

The connected count comes from ``ROLE`` in the same pipeline and is
remembered per primary (asked once on its own the first time), so a batch
that cannot be acknowledged never waits out a WAIT. ``ROLE`` also shows
that the node still is a primary.
"""

from __future__ import annotations

from typing import Any

from supergraph_messaging.conf import conf
from supergraph_messaging.exceptions import NotReplicated

#: Replicas each primary had connected at its last batch, by node name.
_connected: dict[str, int] = {}


def wait_ms() -> int:
    """Inside the socket timeout, so a WAIT that runs out is an answer, not a timeout."""
    return max(1, int(conf.socket_timeout * 1000 / 2))


def begin(conn: Any, pipe: Any, node: str) -> int:
    """Queue ``ROLE`` before the batch; returns how many replicas to WAIT for after it. A primary not
    seen before is asked first, once: a WAIT for a replica it does not have would stall the batch for
    the whole WAIT timeout."""
    wanted = conf.durable_replicas
    if not wanted:
        return 0
    if node not in _connected:
        _connected[node] = _replicas(conn.execute_command("ROLE"))
    pipe.execute_command("ROLE")
    return wanted if _connected[node] >= wanted else 0


def _replicas(role: Any) -> int:
    """Connected replicas, from a primary's ``ROLE`` reply."""
    return len(role[2]) if role and role[0] in (b"master", "master") else 0


def end(pipe: Any, waiting: int) -> None:
    if waiting:
        pipe.execute_command("WAIT", waiting, wait_ms())


def check(replies: list[Any], node: str, waiting: int) -> tuple[list[Any], NotReplicated | None]:
    """The batch's own replies (without ROLE and WAIT), and a :class:`NotReplicated` to raise when fewer
    replicas than required acknowledged it."""
    wanted = conf.durable_replicas
    if not wanted:
        return replies, None
    acked = int(replies[-1]) if waiting else 0
    connected = _connected[node] = _replicas(replies[0])
    own = replies[1:-1] if waiting else replies[1:]
    if acked >= wanted:
        return own, None
    return own, NotReplicated(f"{acked} of the {wanted} replica(s) that DURABLE_REPLICAS asks for acknowledged "
                              f"the appended events on {node} ({connected} connected, WAIT {wait_ms()} ms); "
                              "their outbox rows stay unrelayed and the next round appends them again.")
