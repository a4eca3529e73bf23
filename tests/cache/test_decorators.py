from __future__ import annotations

import datetime
import json
from typing import Any

import pytest

from supergraph_messaging import CacheKeyError, CacheManager, redis_cache
from supergraph_messaging.cache import stats as _stats  # noqa: F401
from tests.conftest import lease

pytestmark = pytest.mark.usefixtures("topology")


def test_interop_with_cache_manager(redis_conn: Any) -> None:
    data = {"id": 1, "mac_address": "AA:BB", "model": "Hikvision", "settings": {"fps": 25}}
    CacheManager(prefix="camera").set("mac:AA:BB", data)
    calls: list[str] = []

    @redis_cache(key="camera:mac:{mac_address}")
    def get_camera(mac_address: str) -> Any:
        calls.append(mac_address)
        return None

    assert get_camera("AA:BB") == data
    assert calls == []
    assert json.loads(redis_conn.get("camera:mac:AA:BB")) == data


def test_hit_equals_miss(redis_conn: Any) -> None:
    when = datetime.datetime(2026, 5, 1, 12, 0, tzinfo=datetime.UTC)

    @redis_cache(key="t:{n}")
    def f(n: int) -> dict[str, Any]:
        return {"when": when, "n": n, "tuple": (1, 2)}

    miss = f(1)
    hit = f(1)
    assert miss == hit == {"when": "2026-05-01T12:00:00Z", "n": 1, "tuple": [1, 2]}
    assert redis_conn.exists("t:1")


def test_none_not_cached_unless_asked(redis_conn: Any) -> None:
    calls: list[int] = []

    @redis_cache(key="none:{n}")
    def f(n: int) -> None:
        calls.append(n)

    @redis_cache(key="none2:{n}", cache_none=True)
    def g(n: int) -> None:
        calls.append(n)

    f(1), f(1)
    assert calls == [1, 1] and not redis_conn.exists("none:1", lease("none:1"))
    calls.clear()
    g(1), g(1)
    assert calls == [1] and redis_conn.get("none2:1") == b"null"


def test_unfillable_placeholder_names_it(redis_conn: Any) -> None:
    with pytest.raises(TypeError, match="'mac'"):

        @redis_cache(key="camera:{mac}")
        def f(mac_address: str) -> None: ...

    @redis_cache(key="camera:{obj.missing}")
    def g(obj: Any) -> int:
        return 1

    with pytest.raises(CacheKeyError, match=r"obj\.missing"):
        g(object())

    @redis_cache(key="camera:{mac}")
    def h(**kwargs: Any) -> int:
        return 1

    with pytest.raises(CacheKeyError, match="'mac'"):
        h(other=1)


def test_positional_keyword_and_defaults_agree(redis_conn: Any) -> None:
    @redis_cache(key="k:{a}:{b}")
    def f(a: int, b: int = 2) -> int:
        return a + b

    assert f.key_for(1) == f.key_for(a=1) == f.key_for(1, b=2) == f.key_for(1, 2) == "k:1:2"
    assert f(1) == 3 and f(a=1, b=2) == 3
    assert redis_conn.keys("k:*") == [b"k:1:2"]


class Processor:
    def __init__(self, tenant: str) -> None:
        self.tenant = tenant
        self.calls = 0

    @redis_cache(key="proc:{self.tenant}:{mac_address}", ttl=60)
    def lookup(self, mac_address: str) -> dict[str, Any]:
        self.calls += 1
        return {"mac": mac_address, "tenant": self.tenant}

    @redis_cache(key="aproc:{mac_address}")
    async def alookup(self, mac_address: str) -> dict[str, Any]:
        self.calls += 1
        return {"mac": mac_address}


def test_methods_use_self_attributes(redis_conn: Any) -> None:
    p = Processor("t1")
    assert p.lookup("AA") == p.lookup("AA") == {"mac": "AA", "tenant": "t1"}
    assert p.calls == 1
    assert Processor.lookup.key_for(p, "AA") == "proc:t1:AA"
    assert 55 <= redis_conn.ttl("proc:t1:AA") <= 60
    assert Processor.lookup.invalidate(p, mac_address="AA") == 1
    p.lookup("AA")
    assert p.calls == 2


async def test_async_functions_and_methods(redis_conn: Any) -> None:
    calls: list[str] = []

    @redis_cache(key="af:{x}")
    async def af(x: str) -> dict[str, str]:
        calls.append(x)
        return {"x": x}

    assert await af("1") == await af("1") == {"x": "1"}
    assert calls == ["1"]
    assert await af.ainvalidate("1") == 1
    await af("1")
    assert calls == ["1", "1"]
    p = Processor("t")
    assert await p.alookup("BB") == await p.alookup("BB")
    assert p.calls == 1
    # A method template that does not use self can be invalidated without the instance.
    assert Processor.alookup.key_for(mac_address="BB") == "aproc:BB"
    assert await Processor.alookup.ainvalidate("BB") == 1


def test_not_json_serialisable_result_is_a_clear_type_error(redis_conn: Any) -> None:
    @redis_cache(key="bad:{x}")
    def f(x: int) -> object:
        return object()

    with pytest.raises(TypeError, match=r"bad:\{x\}.*cannot be cached as JSON"):
        f(1)
    assert not redis_conn.exists("bad:1", lease("bad:1"))


def test_exception_releases_the_lease(redis_conn: Any) -> None:
    @redis_cache(key="exc:{x}")
    def f(x: int) -> int:
        raise ValueError("source down")

    with pytest.raises(ValueError):
        f(1)
    assert not redis_conn.exists(lease("exc:1"))


def test_stats_are_counted_in_process(redis_conn: Any) -> None:
    from supergraph_messaging.cache import stats

    @redis_cache(key="st:{x}")
    def f(x: int) -> int:
        return x

    fields = ("misses", "hits", "fills")
    before = stats.read().get("st:{x}", dict.fromkeys(fields, 0))
    stats._start_flusher()
    with stats._lock:  # the background flusher waits (it flushed mid-test once), so local() sees these calls whole
        f(1), f(1), f(1)
        local = stats.local()["st:{x}"]
    assert tuple(local[k] for k in fields) == (1, 2, 1)
    totals = stats.read()["st:{x}"]
    assert tuple(totals[k] - before[k] for k in fields) == (1, 2, 1)


def test_key_for_and_invalidate_bind_the_instance_either_way(redis_conn: Any) -> None:
    class Acc:
        prefix = "acc"

        @redis_cache(key="acc:proc:{self.prefix}:{mac}")
        def lookup(self, mac: str) -> str:
            return mac

        @redis_cache(key="acc:plain:{mac}")
        def plain(self, mac: str) -> str:
            return mac

    p = Acc()
    assert p.lookup.key_for("M1") == Acc.lookup.key_for(p, "M1") == "acc:proc:acc:M1"
    assert p.plain.key_for("M1") == Acc.plain.key_for(p, "M1") == Acc.plain.key_for(mac="M1") == "acc:plain:M1"
    assert p.lookup("M1") == "M1" and redis_conn.exists("acc:proc:acc:M1")
    assert Acc.lookup.invalidate(p, "M1") == 1
    p.lookup("M1")
    assert p.lookup.invalidate("M1") == 1
    assert Acc.lookup(p, "M2") == "M2" and redis_conn.exists("acc:proc:acc:M2")


def test_decorated_functions_keep_their_identity() -> None:
    import inspect

    from asgiref.sync import iscoroutinefunction

    @redis_cache(key="id:{x}")
    def f(x: int) -> int:
        """Doc."""
        return x

    @redis_cache(key="aid:{x}")
    async def af(x: int) -> int:
        return x

    assert f.__name__ == "f" and f.__doc__ == "Doc." and list(inspect.signature(f).parameters) == ["x"]
    assert iscoroutinefunction(af) and not iscoroutinefunction(f)


def test_redefining_a_cached_function_replaces_its_template() -> None:
    from supergraph_messaging.cache.invalidation import templates

    for _ in range(3):
        @redis_cache(key="redef:{x}", invalidate_on=["redef.changed"])
        def redefined(x: int) -> int:
            return x

    assert sum(r.template.template == "redef:{x}" for r in templates) == 1


@pytest.mark.topology("single")
@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_miss_costs_two_round_trips_and_a_hit_one(own_redis: Any, mode: str) -> None:
    """A sync read that misses takes the lease too (ACQUIRE), so a miss + fill is two commands, as a plain
    GET + SET is; a hit is one."""
    from django.test import override_settings

    from supergraph_messaging.redis import scripts
    from supergraph_messaging.redis.client import reset_clients

    conn = own_redis.client()
    for src in (scripts.ACQUIRE, scripts.FILL):
        conn.script_load(src)
    with override_settings(SUPERGRAPH_MESSAGING={"REDIS_URL": own_redis.url}):
        reset_clients()

        if mode == "sync":
            @redis_cache(key="rt:{n}", ttl=60)
            def item(n: int) -> dict[str, int]:
                return {"n": n}

            conn.config_resetstat()
            assert item(1) == {"n": 1}
            misses = _commands(conn)
            assert item(1) == {"n": 1}
        else:
            @redis_cache(key="rt:{n}", ttl=60)
            async def aitem(n: int) -> dict[str, int]:
                return {"n": n}

            conn.config_resetstat()
            assert await aitem(1) == {"n": 1}
            misses = _commands(conn)
            assert await aitem(1) == {"n": 1}
        total = _commands(conn)
    reset_clients()
    # (commandstats counts the commands inside the scripts too: ACQUIRE = GET + SET NX, FILL = GET of the
    # lease + SET + DEL.) Async reads GET first (see scripts.ACQUIRE): one round trip more on a miss.
    if mode == "sync":
        assert misses == {"evalsha": 2, "get": 2, "set": 2, "del": 1}
        assert total == {"evalsha": 3, "get": 3, "set": 2, "del": 1}  # and ACQUIRE (a hit: its GET)
    else:
        assert misses == {"evalsha": 2, "get": 3, "set": 2, "del": 1}
        assert total == {"evalsha": 2, "get": 4, "set": 2, "del": 1}  # and a GET (a hit)


def _commands(conn: Any) -> dict[str, int]:
    skip = {"config|resetstat", "info", "hello", "client|setinfo", "ping", "select"}
    return {name.removeprefix("cmdstat_"): s["calls"] for name, s in conn.info("commandstats").items()
            if name.removeprefix("cmdstat_") not in skip}


def test_remembered_keys_follow_the_arguments_and_the_prefix() -> None:
    """key_for remembers str/int positional arguments; 1, True and 1.0 (one dict key) stay apart."""
    from django.test import override_settings

    @redis_cache(key="memo:{x}:{y}")
    def f(x: Any, y: Any = "d") -> Any:
        return x

    assert [f.key_for(1), f.key_for(True), f.key_for(1.0), f.key_for("1"), f.key_for(1)] == [
        "memo:1:d", "memo:True:d", "memo:1.0:d", "memo:1:d", "memo:1:d"]
    assert f.key_for(2, "z") == "memo:2:z" and f.key_for(2, y="k") == "memo:2:k"
    with override_settings(SUPERGRAPH_MESSAGING={"KEY_PREFIX": "p:"}):
        assert f.key_for(1) == "p:memo:1:d"
