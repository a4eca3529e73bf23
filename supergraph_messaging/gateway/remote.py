"""Gateway mode: other services' subscriptions served at this project's ``/subscribe``, their authority kept.

With ``GATEWAY_SERVICES`` set, this process reads each service's ``/__schema``
(with its first client, when a service announces itself, and on a period), each
service in a loop of its own with a total deadline and bounds in bytes and
entities, and registers a :class:`RemoteSubscription` per entity it may serve
(:mod:`.services`). Clients see them exactly like local ones; events come from
the same Redis channels through the same hub. Access is decided by the owning
service (``POST /__authorize``), from a short-lived assertion of the user this
gateway authenticated, signed with that service's own ``SERVICE_TOKEN``: a
client's cookie or token never leaves the gateway. A service that does not
answer makes only its own entities ``unavailable``; subscriptions already open
stay, since their events come from Redis.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Mapping
from typing import Any, ClassVar, TypeGuard

from channels.db import database_sync_to_async

from supergraph_messaging.conf import ServiceEntry, conf
from supergraph_messaging.gateway.notices import NOTICE_CHANNEL, UNREACHABLE, NoticeSink
from supergraph_messaging.gateway.schema import ACCESS_LEVELS, TYPES_BY_NAME, check_entry, parse_schema
from supergraph_messaging.gateway.services import Ownership, Service
from supergraph_messaging.realtime.auth import sign_assertion
from supergraph_messaging.realtime.filters import Refused
from supergraph_messaging.realtime.hub import Route, get_hub
from supergraph_messaging.realtime.subscriptions import Directory, Subscription, get_subscription, registry

logger = logging.getLogger("supergraph_messaging.gateway")

class RemoteSubscription(Subscription):
    """An entity of another service, built from its ``/__schema``; access is asked of that service."""

    service: ClassVar[str] = ""
    remote_requires_auth: ClassVar[bool] = False

    @classmethod
    def requires_auth(cls) -> bool:
        return cls.remote_requires_auth

    @classmethod
    def access(cls, user: Any) -> dict[str, Any] | None:
        raise TypeError(f"{cls.entity} belongs to service {cls.service!r}: its access is decided there "
                        "(RemoteSubscription.authorize).")

    @classmethod
    async def authorize(cls, user: Any, filters: Any) -> dict[str, Any]:
        """The server filters the owning service imposes for ``user``; :class:`Refused` if none."""
        gateway = get_gateway()
        if gateway is None:
            raise Refused(f"{cls.entity} belongs to service {cls.service!r}, which is no longer configured.",
                          "unavailable")
        return await gateway.authorize(cls, user, filters)

    @classmethod
    def grant(cls, filters: Any, server: dict[str, Any]) -> Any:
        """The client's filters and the server filters granted: the service is asked again with the one,
        and a different answer than the other ends the subscription."""
        return filters, server

    @classmethod
    async def recheck(cls, user: Any, grant: Any, user_changed: bool) -> Refused | None:
        """Asked of the owning service at every re-check, changed user or not (its rules may have
        changed); a service that does not answer keeps the subscription: its events come from Redis,
        and the next re-check asks again."""
        filters, granted = grant if grant is not None else (None, {})
        try:
            server = await cls.authorize(user, filters)
        except Refused as exc:
            return None if exc.code == "unavailable" else Refused(f"Access to {cls.entity} ended: {exc}", exc.code)
        return None if server == granted else Refused(f"Access to {cls.entity} changed; subscribe again.")


def is_remote(subscription: type[Subscription]) -> TypeGuard[type[RemoteSubscription]]:
    return issubclass(subscription, RemoteSubscription)


def remote_class(service: str, described: Any) -> type[RemoteSubscription]:
    """The class for one entry of a service's ``/__schema`` (checked by :func:`check_entry`).

    Built by ``type()``, so it registers itself like any ``Subscription``,
    under a name per service and entity: a refresh replaces it in place.
    """
    spec = check_entry(described)
    attrs = {
        "__module__": __name__,
        "__qualname__": f"remote.{service}.{spec['entity']}",
        "__doc__": None,
        "entity": spec["entity"],
        "channels": spec["channels"],
        "filters": spec["filters"],
        "field_types": {name: tuple(TYPES_BY_NAME[k] for k in kinds)
                        for name, kinds in spec["field_types"].items() if kinds},
        "fields": spec["fields"],
        "description": spec["description"],
        "service": service,
        "remote_requires_auth": spec["requires_auth"],
    }
    return type(f"Remote{spec['entity']}", (RemoteSubscription,), attrs)


#: Seconds between two reads of one service's /__schema at the least, however often it is woken.
_MIN_GAP = 0.2

#: Seconds after a service's notice during which a failing read is retried quickly.
_EAGER_AFTER_NOTICE = 5.0

#: Entities installed per step before the event loop gets a turn (a schema's classes are built on the loop).
_INSTALL_STEP = 50


class Gateway:
    def __init__(self, services: Mapping[str, ServiceEntry]) -> None:
        self.services = {name: Service(name, entry) for name, entry in services.items()}
        self.discovered = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.notices: Route | None = None
        self.client: Any = None
        self.ownership = Ownership(self.services)
        self._reported: set[tuple[str, str]] = set()

    def start(self) -> None:
        if not self.tasks:
            import httpx

            self.client = httpx.AsyncClient(timeout=conf.gateway_timeout)
            loop = asyncio.get_running_loop()
            self.tasks = [loop.create_task(self._listen_loop())]
            self.tasks += [loop.create_task(self._service_loop(s)) for s in self.services.values()]

    def wake_all(self) -> None:
        """A service announced itself: read every schema now, and retry a failing one every 0.25 s for a
        while (a service announces when its ASGI application is built, a moment before its server listens)."""
        eager = time.monotonic() + _EAGER_AFTER_NOTICE
        for service in self.services.values():
            service.eager_until = eager
            service.wake.set()

    async def ready(self) -> None:
        """Wait (bounded) for the first read of every service, so a first subscribe finds their entities."""
        self.start()
        try:
            await asyncio.wait_for(self.discovered.wait(), conf.gateway_timeout * 2)
        except TimeoutError:
            pass  # a service that does not answer is unavailable, not a reason to hold a client

    def unavailable(self) -> list[str]:
        return [s.name for s in self.services.values() if not s.available]

    def schema_access(self) -> str:
        """The strictest ``SCHEMA_ACCESS`` of this project and of every service behind it."""
        levels = [conf.schema_access, *(s.access for s in self.services.values())]
        return max(levels, key=ACCESS_LEVELS.index)

    async def _service_loop(self, service: Service) -> None:
        """Read one service's /__schema, again on a period or when woken. One loop per service: a slow or
        hostile service delays only its own entities."""
        backoff = 0.5
        while True:
            try:
                await self.refresh(service)
            except Exception:
                # Whatever a service answered, the gateway keeps serving and reads again next round.
                logger.exception("Reading the schema of service %r failed; the gateway retries.", service.name)
            service.tried = True
            if all(s.tried for s in self.services.values()):
                self.discovered.set()
            interval = conf.gateway_refresh_interval
            if not service.available and time.monotonic() < service.eager_until:
                wait = min(0.25, interval)
            elif not service.available or self.notices is None:
                wait, backoff = min(backoff, interval), min(backoff * 2, interval)
            else:
                wait, backoff = interval, 0.5
            await asyncio.sleep(_MIN_GAP)  # a flood of notices reads each service at most this often
            service.wake.clear()
            try:
                await asyncio.wait_for(service.wake.wait(), max(0.0, wait - _MIN_GAP))
            except TimeoutError:
                pass

    async def _listen_loop(self) -> None:
        backoff = 0.5
        while self.notices is None:
            route = Route(NoticeSink(self.wake_all), "gateway", "", [NOTICE_CHANNEL], [], None)
            try:
                await get_hub().add(route)
            except UNREACHABLE as exc:
                get_hub().remove(route)
                if backoff == 0.5:
                    logger.warning("The gateway cannot hear service notices yet (%s); it reads /__schema on a "
                                   "period.", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, conf.gateway_refresh_interval)
                continue
            self.notices = route

    def _headers(self, service: Service) -> dict[str, str]:
        return {"Authorization": f"Service {conf.token_for(service.name) or ''}"}

    async def refresh(self, service: Service) -> None:
        """Read ``service``'s ``/__schema`` and install its entities; a failure marks it unavailable.

        The whole read (connect, headers, body) has ``GATEWAY_TIMEOUT``; the body
        is read up to ``GATEWAY_MAX_SCHEMA_BYTES``, parsed and checked on a
        thread, and the classes are built in steps, so that a schema trickled
        byte by byte, or of 8,000 entities, or of 50 MB, costs the other
        services and the gateway's WebSockets nothing.
        """
        import httpx

        url = f"{service.url}/__schema"
        limit = conf.gateway_max_schema_bytes
        try:
            async with asyncio.timeout(conf.gateway_timeout):
                async with self.client.stream("GET", url, headers=self._headers(service)) as response:
                    if response.status_code != 200:
                        hint = " (is its SERVICE_TOKEN the gateway's SERVICE_TOKEN for it?)" \
                            if response.status_code == 403 else ""
                        self._down(service, f"GET {url} answered {response.status_code}{hint}")
                        return
                    body = bytearray()
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > limit:
                            self._down(service, f"GET {url} answered more than GATEWAY_MAX_SCHEMA_BYTES ({limit})")
                            return
        except TimeoutError:
            self._down(service, f"GET {url} did not answer in full within GATEWAY_TIMEOUT ({conf.gateway_timeout} s)")
            return
        except httpx.HTTPError as exc:
            self._down(service, f"GET {url} failed: {type(exc).__name__} {exc}".rstrip())
            return
        digest = hashlib.blake2b(body, digest_size=16).digest()
        if digest != service.digest:  # the same answer as last time is neither parsed nor installed again
            parsed = await asyncio.to_thread(parse_schema, bytes(body), conf.gateway_max_entities)
            service.digest = digest
            service.refused = f"GET {url}: {parsed}" if isinstance(parsed, str) else ""
            if not isinstance(parsed, str):
                specs, access, problems = parsed
                for problem in problems:
                    self._report(service, problem, f"Service {service.name!r}: an entity of its /__schema was "
                                                   f"ignored: {problem}.", logging.WARNING)
                service.access = access
                await self._install(service, specs)
        if service.refused:
            self._down(service, service.refused)
            return
        if not service.available:
            logger.info("Service %r is available: %s.", service.name,
                        ", ".join(sorted(service.entities)) or "no entities")
        service.available = True
        service.problem = ""

    def _report(self, service: Service, key: str, text: str, level: int = logging.ERROR) -> None:
        """Log a refusal once per service and cause (the schema is read again every period)."""
        if (service.name, key) not in self._reported:
            self._reported.add((service.name, key))
            logger.log(level, text)

    async def _install(self, service: Service, specs: list[dict[str, Any]]) -> None:
        entities: dict[str, type[RemoteSubscription]] = {}
        local_entities = {cls.entity for cls in registry if not is_remote(cls)}
        local_channels = {c for cls in registry if not is_remote(cls) for c in cls.channels}
        for n, spec in enumerate(specs):
            if n and n % _INSTALL_STEP == 0:
                await asyncio.sleep(0)  # other services' reads and the WebSockets go on meanwhile
            problem = self.ownership.claim(service, spec, local_entities, local_channels)
            if problem:
                self._report(service, problem, f"Service {service.name!r} describes what it may not serve: "
                                               f"{problem}; refused.")
                continue
            self.ownership.pin(service, spec)
            cls = entities[spec["entity"]] = remote_class(service.name, spec)
            service.entities[cls.entity] = cls
        for gone in set(service.entities) - set(entities):
            registry[:] = [c for c in registry if c is not service.entities[gone]]
        service.entities = entities

    def _down(self, service: Service, problem: str) -> None:
        if service.available or not service.problem:
            logger.warning("Service %r is unavailable: %s. Its entities are refused until it answers.",
                           service.name, problem)
        service.available = False
        service.problem = problem

    async def authorize(self, subscription: type[RemoteSubscription], user: Any, filters: Any) -> dict[str, Any]:
        """Ask the owning service whether ``user`` (as this gateway authenticated it) may subscribe.

        The service gets a signed assertion of who the user is, never the
        client's cookie or token: a service could use those elsewhere.
        """
        import httpx

        service = self.services.get(subscription.service)
        unavailable = Refused(f"{subscription.entity} is unavailable (service {subscription.service!r} is not "
                              "answering); retry later.", "unavailable")
        if service is None or not service.available:
            raise unavailable
        key = conf.token_for(service.name)
        if not key:
            raise unavailable
        assertion = await database_sync_to_async(sign_assertion)(user, service.name, key)
        try:
            async with asyncio.timeout(conf.gateway_timeout):
                response = await self.client.post(f"{service.url}/__authorize", headers=self._headers(service), json={
                    "entity": subscription.entity, "filters": filters, "assertion": assertion})
            answer = response.json() if response.status_code == 200 else None
        except httpx.PoolTimeout:
            # This gateway's own connections to the service are all busy (a burst of subscribes): the
            # service is not down, this one subscribe is refused and retried by the client.
            raise Refused(f"{subscription.entity} is busy at the gateway; retry later.", "unavailable") from None
        except (httpx.HTTPError, ValueError, TimeoutError) as exc:
            answer, response = None, exc
        if not isinstance(answer, dict) or not isinstance(answer.get("allowed"), bool):
            status = getattr(response, "status_code", response)
            hint = " (it refused the gateway's token or assertion: are the SERVICE_TOKENs the same?)" \
                if status == 403 else ""
            self._down(service, f"POST {service.url}/__authorize: {status!r}{hint}")
            service.wake.set()
            raise unavailable
        if answer["allowed"]:
            server = answer.get("server_filters") or {}
            if not isinstance(server, dict):
                raise unavailable
            return server
        code = answer.get("code") if isinstance(answer.get("code"), str) else "forbidden"
        if code == "unknown_entity":
            service.wake.set()  # the service dropped it since the last read
        raise Refused(str(answer.get("message") or f"Not allowed to subscribe to {subscription.entity}.")[:500], code)

    def describe(self) -> dict[str, dict[str, Any]]:
        """Per entity served for a service: which, and whether it answers (added to ``/__schema``)."""
        return {entity: {"service": s.name, "available": s.available}
                for s in self.services.values() for entity in s.entities}

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        if self.notices is not None:
            get_hub().remove(self.notices)
        if self.client is not None:
            await self.client.aclose()


_gateways: dict[asyncio.AbstractEventLoop, Gateway] = {}


def get_gateway() -> Gateway | None:
    """The running loop's gateway (None unless ``GATEWAY_SERVICES`` is set), started on first use."""
    services = conf.gateway_services
    if not services:
        return None
    loop = asyncio.get_running_loop()
    gateway = _gateways.get(loop)
    if gateway is None:
        for old in [lp for lp in _gateways if lp.is_closed()]:
            del _gateways[old]
        gateway = _gateways[loop] = Gateway(services)
    gateway.start()
    return gateway


class GatewayDirectory(Directory):
    """Entities of this process and, on a gateway (``GATEWAY_SERVICES``), of the services behind it."""

    def connected(self) -> None:
        get_gateway()  # a gateway starts reading its services' schemas with its first client

    async def find(self, entity: str) -> type[Subscription] | None:
        found = get_subscription(entity)
        gateway = get_gateway()
        if found is None and gateway is not None and not gateway.discovered.is_set():
            await gateway.ready()  # the first client of a new gateway: its services' entities are on their way
            found = get_subscription(entity)
        return found

    def unknown_hint(self) -> str:
        gateway = get_gateway()
        down = gateway.unavailable() if gateway is not None else []
        return f" (not answering: service {', '.join(map(repr, down))}; it may be theirs)" if down else ""
