"""Health probes: ``GET /__health/live`` and ``GET /__health/ready``, for Kubernetes and compose.

``live``: the process serves HTTP (under ASGI, its event loop answers).
Nothing else is asked: a liveness probe that fails on a Redis outage gets
every replica restarted for something a restart does not fix.

``ready``: may this process take traffic now? Each check is named in the
JSON with its status, and the answer is 200 when all pass, 503 otherwise:

- ``redis``: Redis answers a ``PING`` (a Cluster: ``CLUSTER INFO`` says every
  slot is served) within the socket timeout, on a connection of its own, so
  neither the pool nor the circuit breaker can hide a recovery (the probe
  after Redis is back passes);
- ``outbox`` (durable delivery): the oldest unrelayed row is younger than
  ``HEALTH_OUTBOX_MAX_AGE``;
- ``gateway`` (gateway mode): at least one service behind it answered its
  ``/__schema``.

What is reported is status, timings and counts; never a URL, a host or an
exception's text (those go to the log, once per change of state).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from supergraph_messaging.conf import conf
from supergraph_messaging.delivery import outbox
from supergraph_messaging.gateway.remote import get_gateway
from supergraph_messaging.redis.client import get_redis_client

logger = logging.getLogger("supergraph_messaging.health")

#: The last state logged per check: a failing check logs when it starts failing and when it passes again.
_logged: dict[str, bool] = {}


def _report(name: str, ok: bool, detail: str = "") -> None:
    if _logged.get(name, True) != ok:
        if ok:
            logger.info("Readiness check %r passes again.", name)
        else:
            logger.warning("Readiness check %r fails: %s", name, detail)
    _logged[name] = ok


async def check_redis() -> dict[str, Any]:
    started = time.perf_counter()
    try:
        # The thread may outlive the wait (a socket in the kernel cannot be cancelled); the answer may not.
        async with asyncio.timeout(conf.socket_timeout * 2 + 0.5):
            await sync_to_async(get_redis_client().probe, thread_sensitive=False)()
    except Exception as exc:  # any failure, whatever raised it, is a failed check with its kind named
        _report("redis", False, f"{type(exc).__name__}: {exc}")
        return {"status": "fail", "error": type(exc).__name__}
    _report("redis", True)
    return {"status": "ok", "ms": round((time.perf_counter() - started) * 1000, 1)}


async def check_outbox() -> dict[str, Any]:
    try:
        pending, oldest = await database_sync_to_async(outbox.backlog)()
    except Exception as exc:  # the database is down: not ready either
        _report("outbox", False, f"{type(exc).__name__}: {exc}")
        return {"status": "fail", "error": type(exc).__name__}
    limit = conf.health_outbox_max_age
    ok = oldest is None or oldest < limit
    _report("outbox", ok, f"the oldest unrelayed row waits {oldest} s (HEALTH_OUTBOX_MAX_AGE {limit})")
    return {"status": "ok" if ok else "fail", "pending": pending,
            "oldest_seconds": None if oldest is None else round(oldest, 1), "max_seconds": limit}


async def check_gateway() -> dict[str, Any]:
    gateway = get_gateway()
    assert gateway is not None
    await gateway.ready()  # a new gateway's first reads (bounded: twice GATEWAY_TIMEOUT)
    available = sorted(name for name, s in gateway.services.items() if s.available)
    ok = bool(available)
    _report("gateway", ok, "no service behind the gateway answered its /__schema")
    return {"status": "ok" if ok else "fail", "services": len(gateway.services), "available": available}


@never_cache
@require_safe
async def live(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@never_cache
@require_safe
async def ready(request: HttpRequest) -> JsonResponse:
    checks = {"redis": check_redis()}
    if conf.durable:
        checks["outbox"] = check_outbox()
    if conf.gateway_services:
        checks["gateway"] = check_gateway()
    results = dict(zip(checks, await asyncio.gather(*checks.values()), strict=True))
    ok = all(r["status"] == "ok" for r in results.values())
    return JsonResponse({"status": "ok" if ok else "fail", "checks": results}, status=200 if ok else 503)


# -- the worker's probes (manage.py messaging_listen --health-port) ------------------------------------------
#: What a probe request may send before it is cut off (one request line and a few headers).
PROBE_REQUEST_LIMIT = 8192
PROBE_TIMEOUT = 5.0


async def worker_ready(subscriber: Any) -> tuple[bool, dict[str, Any]]:
    """A worker is ready when Redis answers and its Pub/Sub connection is subscribed."""
    checks = {"redis": await check_redis(),
              "pubsub": {"status": "ok" if subscriber.connected else "fail"}}
    return all(c["status"] == "ok" for c in checks.values()), checks


async def serve_worker_probes(host: str, port: int, subscriber: Any) -> asyncio.Server:
    """``/__health/live`` and ``/__health/ready`` over plain HTTP/1.0, answered by the worker's own event
    loop: a loop that is stuck (a handler blocking it) does not answer, and its liveness probe fails."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                request = await reader.readuntil(b"\r\n\r\n")
                parts = request.split(b"\r\n", 1)[0].split()
                path = parts[1].split(b"?")[0] if len(parts) == 3 and parts[0] in (b"GET", b"HEAD") else None
                body: dict[str, Any]
                if path == b"/__health/live":
                    status, body = 200, {"status": "ok"}
                elif path == b"/__health/ready":
                    ok, checks = await worker_ready(subscriber)
                    status, body = (200 if ok else 503), {"status": "ok" if ok else "fail", "checks": checks}
                else:
                    status, body = 404, {"status": "fail", "error": "GET /__health/live or /__health/ready"}
                payload = json.dumps(body).encode()
                reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
                writer.write(b"HTTP/1.0 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                             b"Cache-Control: no-store\r\nConnection: close\r\n\r\n%s"
                             % (status, reason.encode(), len(payload), payload if parts[0] == b"GET" else b""))
                await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            logger.debug("A health probe connection ended without an answer: %r", exc)
        finally:
            writer.close()

    return await asyncio.start_server(answer, host, port, limit=PROBE_REQUEST_LIMIT)
