"""Redis topologies for the tests, from real processes: a primary, a replica and three sentinels.

Started on free loopback ports; ``SentinelSetup.url`` is the app's
``redis+sentinel://`` URL for them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from typing import Any

import redis

from tests.support.redis_server import RedisServer, free_port, redis_server_binary

SERVICE = "sgmprimary"


def server_version() -> tuple[int, ...]:
    """The version of the redis-server the tests start (``redis-server --version``: "... v=7.0.15 ...")."""
    out = subprocess.run([redis_server_binary(), "--version"], capture_output=True, text=True, timeout=10).stdout
    for word in out.split():
        if word.startswith("v="):
            return tuple(int(p) for p in word[2:].split(".") if p.isdigit())
    return (0,)


class SentinelSetup:
    def __init__(self, sentinels: int = 3, down_after_ms: int = 1000) -> None:
        """``down_after_ms``: how long a node may not answer before the sentinels call it down. 1 s makes
        failovers quick; a test that kills a primary under load and brings it back wants more (see
        test_durable_failover: a newly promoted primary missed 1 s of pings on a loaded machine, and the
        sentinels failed over again to a replica still syncing)."""
        # No 5 s wait before a full sync (Redis 7's diskless default), for either side of a failover.
        quick = ("--repl-diskless-sync-delay", "0")
        self.primary = RedisServer(extra_args=quick)
        self.primary.start()
        self.replica = RedisServer(extra_args=(*quick, "--replicaof", "127.0.0.1", str(self.primary.port)))
        self.replica.start()
        self.dir = tempfile.mkdtemp(prefix="sgm-sentinel-")
        self.ports = [free_port() for _ in range(sentinels)]
        self.sentinels: list[subprocess.Popen[bytes]] = []
        for port in self.ports:
            conf = os.path.join(self.dir, f"sentinel-{port}.conf")
            with open(conf, "w") as f:
                f.write(f"port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {self.dir}\n"
                        f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary.port} 2\n"
                        f"sentinel down-after-milliseconds {SERVICE} {down_after_ms}\n"
                        f"sentinel failover-timeout {SERVICE} 3000\n"
                        f"logfile {os.path.join(self.dir, f'sentinel-{port}.log')}\n")
            self.sentinels.append(subprocess.Popen([redis_server_binary(), conf, "--sentinel"],
                                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                linked = self.replica.client().info("replication").get("master_link_status") == "up"
                if linked and all(self._sentinel(p).sentinel_get_master_addr_by_name(SERVICE) for p in self.ports):
                    return
            except redis.RedisError:
                pass
            time.sleep(0.05)
        self.close()
        raise RuntimeError("the sentinels did not start")

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` of each sentinel's log (its +failover-*, -failover-abort-* and +switch-master
        events): what a test that waited for a switch shows when none came."""
        out = []
        for port in self.ports:
            try:
                with open(os.path.join(self.dir, f"sentinel-{port}.log"), errors="replace") as f:
                    out.append(f"--- sentinel {port}\n" + "".join(f.readlines()[-lines:]))
            except OSError as exc:
                out.append(f"--- sentinel {port}: {exc}")
        return "\n".join(out)

    def _sentinel(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)

    def url(self, db: int = 0) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.ports)
        return f"redis+sentinel://{hosts}/{SERVICE}/{db}"

    def client(self) -> redis.Redis:
        """A client to the current primary."""
        host, port = self._sentinel(self.ports[0]).sentinel_get_master_addr_by_name(SERVICE)
        return redis.Redis(host=host, port=int(port), socket_timeout=5)

    def flush(self) -> None:
        with self.client() as conn:
            conn.flushall()

    def close(self) -> None:
        for proc in self.sentinels:
            proc.kill()
            proc.wait(10)
        self.replica.close()
        self.primary.close()
        shutil.rmtree(self.dir, ignore_errors=True)


SLOTS = 16384


class ClusterClient(redis.RedisCluster):
    """redis-py's cluster client, with the whole-keyspace commands the tests use asking every primary."""

    def keys(self, pattern: Any = "*", **kwargs: Any) -> Any:
        return super().keys(pattern, target_nodes=self.PRIMARIES, **kwargs)

    def dbsize(self, **kwargs: Any) -> Any:
        return super().dbsize(target_nodes=self.PRIMARIES, **kwargs)

    def mset(self, mapping: Any) -> Any:
        return self.mset_nonatomic(mapping)

    def pubsub_numsub(self, *channels: str) -> list[tuple[bytes, int]]:
        """Summed over every node: a subscriber is counted on the node it is connected to."""
        totals = dict.fromkeys(channels, 0)
        for node in self.get_nodes():
            for name, count in self.get_redis_connection(node).pubsub_numsub(*channels):
                totals[name.decode()] += int(count)
        return [(c.encode(), n) for c, n in totals.items()]


class ClusterSetup:
    """A Redis Cluster of ``primaries`` primaries (and ``replicas`` replicas each), slots assigned from Python.

    Client and bus ports are both free ports (``--cluster-port``), so several clusters and the machine's own
    Redis never collide. Ready in about 1-2 s.
    """

    def __init__(self, primaries: int = 3, replicas: int = 0, node_timeout_ms: int = 1000) -> None:
        self.nodes: list[RedisServer] = []
        try:
            for _ in range(primaries * (1 + replicas)):
                self.nodes.append(self._node(node_timeout_ms))
            self._form(primaries)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _node(node_timeout_ms: int, attempts: int = 3) -> RedisServer:
        """A started node. Its two ports were free when picked, but another process may take one before
        redis-server binds it (seen once in a full run): then it is tried again on two new ports."""
        for attempt in range(attempts):
            node = RedisServer(extra_args=("--cluster-enabled", "yes", "--cluster-port", str(free_port()),
                                           "--cluster-node-timeout", str(node_timeout_ms),
                                           "--cluster-config-file", "nodes.conf",
                                           "--repl-diskless-sync-delay", "0"))
            try:
                node.start()
            except RuntimeError:
                node.close()
                if attempt == attempts - 1:
                    raise
                continue
            return node
        raise AssertionError("unreachable")

    def _form(self, primaries: int) -> None:
        first = self.nodes[0].client()
        bus_ports = [int(n.extra_args[n.extra_args.index("--cluster-port") + 1]) for n in self.nodes]
        for node, bus in zip(self.nodes[1:], bus_ports[1:], strict=True):
            first.execute_command("CLUSTER", "MEET", "127.0.0.1", node.port, bus)
        step = SLOTS // primaries
        for i, node in enumerate(self.nodes[:primaries]):
            end = SLOTS - 1 if i == primaries - 1 else (i + 1) * step - 1
            node.client().execute_command("CLUSTER", "ADDSLOTSRANGE", i * step, end)
        ids = [n.client().execute_command("CLUSTER", "MYID").decode() for n in self.nodes[:primaries]]
        self._wait(lambda: all(len(n.client().execute_command("CLUSTER", "NODES").splitlines()) == len(self.nodes)
                               for n in self.nodes))
        for i, node in enumerate(self.nodes[primaries:]):
            node.client().execute_command("CLUSTER", "REPLICATE", ids[i % primaries])
        self._wait(lambda: all(n.client().execute_command("CLUSTER", "INFO").find(b"cluster_state:ok") >= 0
                               for n in self.nodes))
        if len(self.nodes) > primaries:
            self._wait(lambda: all(n.client().info("replication").get("master_link_status") == "up"
                                   for n in self.nodes[primaries:]))

    @staticmethod
    def _wait(ready: object, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if ready():  # type: ignore[operator]
                    return
            except redis.RedisError:
                pass
            time.sleep(0.05)
        raise RuntimeError("the cluster did not form")

    @property
    def primaries(self) -> list[RedisServer]:
        return [n for n in self.nodes if n.process is not None and n.process.poll() is None
                and n.client().info("replication")["role"] == "master"]

    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def client(self) -> redis.RedisCluster:
        live = next(n for n in self.nodes if n.process is not None and n.process.poll() is None)
        return ClusterClient(host="127.0.0.1", port=live.port, socket_timeout=5)

    def flush(self) -> None:
        for node in self.primaries:
            node.client().flushall()

    def close(self) -> None:
        for node in self.nodes:
            node.close()
