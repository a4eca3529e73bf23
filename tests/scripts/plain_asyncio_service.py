"""A service without Django settings, as the seed's services are: every url= form must work."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from supergraph_messaging import (
    CacheManager,
    RedisSubscriber,
    aredis_publish,
    init_redis,
    redis_cache,
    redis_publish,
)

URL = sys.argv[1]


async def main() -> None:
    got: list[Any] = []
    sub = RedisSubscriber(url=URL)
    sub.on("plain.events")(got.append)
    await sub.start()
    cache = CacheManager(prefix="plain", url=URL)
    await cache.aset("k", {"v": 1})
    assert await cache.aget("k") == {"v": 1}
    assert cache.get("k") == {"v": 1}
    assert await aredis_publish("plain.events", {"n": 1}, url=URL) == 1
    for _ in range(100):
        if got:
            break
        await asyncio.sleep(0.02)
    await sub.stop()
    assert got == [{"n": 1}], got
    init_redis(URL)
    assert redis_publish("plain.events", {"n": 2}) == 0

    @redis_cache(key="plain:f:{x}")
    def f(x: int) -> int:
        return x + 1

    assert f(1) == 2 == f(1)
    print("ok")


asyncio.run(main())
