"""Loopback ports for the test session, without pytest: Django's test settings import this in every server
subprocess the tests and benchmarks start, where importing pytest cost 65 ms of each start-up."""

from __future__ import annotations

import os
import socket

__all__ = ["free_port", "session_port"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_xdist_worker = os.environ.get("PYTEST_XDIST_WORKER")
if _xdist_worker and os.environ.get("SGM_TEST_REDIS_WORKER") != _xdist_worker:
    # A pytest-xdist worker (`make test PYTEST_ARGS="-n 2"`): it inherited the controller's port and owner, but its
    # tests flush and kill their Redis, so it starts its own. Its subprocesses inherit the worker's.
    os.environ.pop("SGM_TEST_REDIS_PORT", None)
    os.environ.pop("SGM_TEST_REDIS_OWNER", None)
    os.environ["SGM_TEST_REDIS_WORKER"] = _xdist_worker


def session_port() -> int:
    """The session server's port, fixed before Django settings are read."""
    return int(os.environ.setdefault("SGM_TEST_REDIS_PORT", str(free_port())))
