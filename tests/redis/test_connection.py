from __future__ import annotations

from typing import Any

import pytest
import redis
from django.test import override_settings

from supergraph_messaging import get_redis_client, init_redis
from supergraph_messaging.exceptions import MessagingError, RedisUnavailable
from supergraph_messaging.redis.client import mask_url
from tests.support.redis_server import RedisServer, free_port


def test_mask_url_hides_password() -> None:
    assert mask_url("redis://user:s3cret@host:6380/1") == "redis://user:***@host:6380/1"
    assert mask_url("redis://:s3cret@host/0") == "redis://:***@host/0"
    assert mask_url("redis://host:1/0") == "redis://host:1/0"


def test_sync_client_reuses_django_redis_pool(redis_server: RedisServer) -> None:
    from django_redis import get_redis_connection

    client = get_redis_client()
    assert client.redis.connection_pool is get_redis_connection("default").connection_pool
    assert client.redis.ping()


def test_init_redis_unreachable_names_url_and_cause() -> None:
    port = free_port()
    with pytest.raises(RedisUnavailable) as info:
        init_redis(f"redis://:hunter2@127.0.0.1:{port}/0")
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message and "***" in message
    assert "hunter2" not in message
    assert "refused" in message.lower() or "error" in message.lower()
    init_redis.__globals__["_override_url"] = None
    init_redis.__globals__["reset_clients"]()


def test_init_redis_rejects_unknown_scheme() -> None:
    with pytest.raises(MessagingError, match="Unsupported Redis URL"):
        init_redis("http://127.0.0.1:1/")


def test_init_redis_returns_connected_client(own_redis: RedisServer) -> None:
    try:
        client = init_redis(own_redis.url)
        assert client.redis.set("x", "1") and own_redis.client().get("x") == b"1"
    finally:
        init_redis.__globals__["_override_url"] = None
        init_redis.__globals__["reset_clients"]()
    init_redis.__globals__["reset_clients"]()


def test_password_url(tmp_path: Any) -> None:
    server = RedisServer()
    server.start()
    try:
        server.client().config_set("requirepass", "pw")
        url = f"redis://:pw@127.0.0.1:{server.port}/0"
        assert get_redis_client(url).connect().redis.ping()
        with pytest.raises(RedisUnavailable):
            get_redis_client(f"redis://:bad@127.0.0.1:{server.port}/0").connect()
    finally:
        server.close()


def test_unix_socket_url(tmp_path: Any) -> None:
    import subprocess
    import time

    from tests.support.redis_server import redis_server_binary

    sock = tmp_path / "r.sock"
    proc = subprocess.Popen([redis_server_binary(), "--port", "0", "--unixsocket", str(sock),
                             "--save", "", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(200):
            if sock.exists():
                break
            time.sleep(0.01)
        assert get_redis_client(f"unix://{sock}").connect().redis.ping()
    finally:
        proc.kill()
        proc.wait()


async def test_async_client_per_loop(redis_server: RedisServer) -> None:
    client = get_redis_client()
    assert await client.aredis.ping()
    assert client.aredis is client.aredis
    assert await client.aconnect() is client


def test_redis_url_setting_wins(own_redis: RedisServer) -> None:
    with override_settings(SUPERGRAPH_MESSAGING={"REDIS_URL": own_redis.url}):
        client = get_redis_client()
        assert client.url == own_redis.url
        assert isinstance(client.redis, redis.Redis)
        client.redis.set("only-here", "1")
    assert own_redis.client().get("only-here") == b"1"


def test_url_forms_work_in_a_plain_asyncio_script_without_django_settings(own_redis: Any) -> None:
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run([sys.executable, str(ROOT / "tests/scripts/plain_asyncio_service.py"), own_redis.url],
                            capture_output=True, text=True, timeout=60, env=env, cwd="/")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"
