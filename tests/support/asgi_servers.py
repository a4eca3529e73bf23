"""The ASGI servers ``/subscribe`` is tested and benchmarked under, started as real processes.

Each is started the way its documentation starts a Django/Channels
application, on ``tests.support.asgi:application`` (or another app), bound
to loopback on a free port:

- ``daphne``: Channels' own server.
- ``uvicorn-websockets-sansio`` / ``uvicorn-wsproto``: uvicorn with either
  WebSocket implementation (``--ws``; its older ``websockets`` one is
  deprecated), with uvloop and httptools as ``uvicorn[standard]`` installs
  them. ``--lifespan off``: Channels' ``ProtocolTypeRouter`` has no lifespan
  application. ``--ws-per-message-deflate false``: compression keeps a zlib
  context per connection (142 KB per idle connection with a client that
  offers it, against 34 KB) and compresses every frame once per socket.
  ``--backlog``: room for a reconnect storm's handshakes (4096 unless
  ``SGM_ASGI_BACKLOG`` says; the kernel caps it at ``net.core.somaxconn``).
- ``granian``: ``--interface asginl`` (ASGI without lifespan, same reason).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.support.asgi:application"

BACKLOG = os.environ.get("SGM_ASGI_BACKLOG", "4096")

SERVERS = ("daphne", "uvicorn-websockets-sansio", "uvicorn-wsproto", "granian")


def server_command(kind: str, port: int, app: str = APP) -> list[str]:
    """The command line that serves ``app`` on 127.0.0.1:``port`` with server ``kind``."""
    host = "127.0.0.1"
    if kind == "daphne":
        return [sys.executable, "-m", "daphne", "-b", host, "-p", str(port), app]
    if kind.startswith("uvicorn-"):
        return [sys.executable, "-m", "uvicorn", "--host", host, "--port", str(port), "--ws", kind.split("-", 1)[1],
                "--lifespan", "off", "--ws-per-message-deflate", "false", "--backlog", BACKLOG, "--no-access-log",
                "--log-level", "warning", app]
    if kind == "granian":
        return [sys.executable, "-m", "granian", "--interface", "asginl", "--host", host, "--port", str(port),
                "--backlog", BACKLOG, "--log-level", "warning", app]
    raise ValueError(f"unknown ASGI server {kind!r}; one of {', '.join(SERVERS)}")


def wait_port(port: int, proc: subprocess.Popen[Any], timeout: float = 30.0) -> None:
    """Until ``port`` accepts connections; RuntimeError when ``proc`` exits or the time is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the server did not listen on {port} within {timeout:.0f} s")


def start_server(kind: str, port: int, env: dict[str, str], stderr: int | IO[Any] = subprocess.PIPE,
                 app: str = APP) -> subprocess.Popen[str]:
    """Start server ``kind`` and wait until it listens; the caller stops it with :func:`stop_server`."""
    proc = subprocess.Popen(server_command(kind, port, app), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=stderr, text=True, start_new_session=True)
    try:
        wait_port(port, proc)
    except RuntimeError:
        stop_server(proc)
        raise
    return proc


def stop_server(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """SIGTERM the server's process group (granian's workers are child processes), then SIGKILL."""
    try:
        os.killpg(proc.pid, 15)
        proc.wait(timeout)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait(timeout)
