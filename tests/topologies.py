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

import redis

from tests.redis_server import RedisServer, free_port, redis_server_binary

SERVICE = "sgmprimary"


class SentinelSetup:
    def __init__(self, sentinels: int = 3) -> None:
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
                        f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                        f"sentinel failover-timeout {SERVICE} 3000\n")
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

    def _sentinel(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)

    def url(self, db: int = 0) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.ports)
        return f"redis+sentinel://{hosts}/{SERVICE}/{db}"

    def close(self) -> None:
        for proc in self.sentinels:
            proc.kill()
            proc.wait(10)
        self.replica.close()
        self.primary.close()
        shutil.rmtree(self.dir, ignore_errors=True)
