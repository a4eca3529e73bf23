"""Gateway mode: other services' subscriptions served at this project's ``/subscribe``, their authority kept.

With ``GATEWAY_SERVICES`` set, this process reads each service's
``/__schema`` (at start, when a service announces itself on Redis, and on a
period) and registers a :class:`RemoteSubscription` per entity. Clients see
them exactly like local ones: the filters, field types and field lists the
service declared are checked here, and events come from the same Redis
channels through the same hub. What the gateway never decides is access:
on every subscribe (and every re-check) it forwards what its client
presented to the service's ``POST /__authorize`` and enforces the answer,
including the server-side filters for that user.

A service that does not answer makes only its own entities ``unavailable``
(new subscribes are refused with that code; subscriptions already open stay,
since their events come from Redis, not from the service's web process); the
next successful read of its ``/__schema`` brings them back.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeGuard

from .conf import conf
from .connection import REDIS_ERRORS
from .exceptions import RedisUnavailable
from .hub import Route, get_hub
from .recovery import Position
from .subscriptions import JSON_TYPES, OPERATORS, Refused, Subscription, get_subscription, registry

logger = logging.getLogger("supergraph_messaging.gateway")

#: A service publishes here when it starts; a gateway reads every /__schema again when it hears it.
NOTICE_CHANNEL = "supergraph_messaging.services"

#: What a notice or a hub subscription may fail with while Redis is away.
_UNREACHABLE: tuple[type[BaseException], ...] = (*REDIS_ERRORS, RedisUnavailable)

_TYPES_BY_NAME = {name: kind for kind, name in JSON_TYPES.items()}


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
    async def authorize(cls, credentials: Mapping[str, str], filters: Any) -> dict[str, Any]:
        """The server filters the owning service imposes for these credentials; :class:`Refused` if none."""
        gateway = get_gateway()
        if gateway is None:
            raise Refused(f"{cls.entity} belongs to service {cls.service!r}, which is no longer configured.",
                          "unavailable")
        return await gateway.authorize(cls, credentials, filters)


def is_remote(subscription: type[Subscription]) -> TypeGuard[type[RemoteSubscription]]:
    return issubclass(subscription, RemoteSubscription)


def remote_class(service: str, described: Any) -> type[RemoteSubscription]:
    """The class for one entry of a service's ``/__schema`` ``subscriptions`` (ValueError if malformed).

    Built by ``type()``, so it registers itself like any ``Subscription``,
    under a name per service and entity: a refresh replaces it in place.
    """
    if not isinstance(described, Mapping):
        raise ValueError("an entry is not an object")
    entity, channels, filters = described.get("entity"), described.get("channels"), described.get("filters") or {}
    if not isinstance(entity, str) or not entity:
        raise ValueError("an entry has no entity")
    if not isinstance(channels, list) or not channels or not all(isinstance(c, str) and c for c in channels):
        raise ValueError(f"{entity} lists no channels")
    if not isinstance(filters, Mapping) or not all(
            isinstance(ops, list) and all(op in OPERATORS for op in ops) for ops in filters.values()):
        raise ValueError(f"{entity} has filters this version does not know: {filters!r}")
    field_types: dict[str, tuple[type, ...]] = {}
    for name, kinds in (described.get("field_types") or {}).items():
        known = tuple(_TYPES_BY_NAME[k] for k in kinds if k in _TYPES_BY_NAME) if isinstance(kinds, list) else ()
        if known and name in filters:
            field_types[name] = known
    fields = described.get("fields")
    attrs = {
        "__module__": __name__,
        "__qualname__": f"remote.{service}.{entity}",
        "__doc__": None,
        "entity": entity,
        "channels": list(channels),
        "filters": {name: list(ops) for name, ops in filters.items()},
        "field_types": field_types,
        "fields": [str(f) for f in fields] if isinstance(fields, list) else None,
        "description": str(described.get("description") or ""),
        "service": service,
        "remote_requires_auth": bool(described.get("requires_auth")),
    }
    return type(f"Remote{entity}", (RemoteSubscription,), attrs)


@dataclass
class Service:
    name: str
    url: str
    available: bool = False
    entities: dict[str, type[RemoteSubscription]] = field(default_factory=dict)
    problem: str = ""


class _NoticeSink:
    """A hub sink that only wakes the gateway: any message on the notice channel means "read again"."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def deliver(self, route: Route, channel: str, data_json: str, position: Position | None = None) -> None:
        self.gateway.wake.set()

    def gap(self, route: Route, reason: str = "reconnected") -> None:
        self.gateway.wake.set()  # a notice may have been missed while Redis was away


class Gateway:
    def __init__(self, services: Mapping[str, str], token: str) -> None:
        self.services = {name: Service(name, url.rstrip("/")) for name, url in services.items()}
        self.token = token
        self.wake = asyncio.Event()
        self.discovered = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.notices: Route | None = None
        self.client: Any = None

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._run())

    async def ready(self) -> None:
        """Wait (bounded) for the first read of every service, so a first subscribe finds their entities."""
        self.start()
        try:
            await asyncio.wait_for(self.discovered.wait(), conf.gateway_timeout * 2)
        except TimeoutError:
            pass  # a service that does not answer is unavailable, not a reason to hold a client

    def unavailable(self) -> list[str]:
        return [s.name for s in self.services.values() if not s.available]

    async def _run(self) -> None:
        import httpx

        self.client = httpx.AsyncClient(timeout=conf.gateway_timeout,
                                        headers={"Authorization": f"Service {self.token}"})
        backoff = 0.5
        while True:
            try:
                await self._listen()
                await asyncio.gather(*(self.refresh(s) for s in self.services.values()))
            except Exception:
                # Whatever a service answered, the gateway keeps serving and reads again next round.
                logger.exception("Reading the services' schemas failed; the gateway retries.")
            self.discovered.set()
            interval = conf.gateway_refresh_interval
            if self.unavailable() or self.notices is None:
                wait, backoff = min(backoff, interval), min(backoff * 2, interval)
            else:
                wait, backoff = interval, 0.5
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), wait)
            except TimeoutError:
                pass

    async def _listen(self) -> None:
        if self.notices is not None:
            return
        route = Route(_NoticeSink(self), "gateway", "", [NOTICE_CHANNEL], [], None)
        try:
            await get_hub().add(route)
        except _UNREACHABLE as exc:
            get_hub().remove(route)
            logger.warning("The gateway cannot hear service notices yet (%s); it reads /__schema on a period.", exc)
            return
        self.notices = route

    async def refresh(self, service: Service) -> None:
        """Read ``service``'s ``/__schema`` and install its entities; a failure marks it unavailable."""
        import httpx

        try:
            response = await self.client.get(f"{service.url}/__schema")
        except httpx.HTTPError as exc:
            self._down(service, f"GET {service.url}/__schema failed: {type(exc).__name__} {exc}".rstrip())
            return
        if response.status_code != 200:
            hint = " (is SERVICE_TOKEN the same on both?)" if response.status_code == 403 else ""
            self._down(service, f"GET {service.url}/__schema answered {response.status_code}{hint}")
            return
        try:
            described = response.json()["subscriptions"]
        except (ValueError, KeyError, TypeError):
            described = None
        if not isinstance(described, list):
            self._down(service, f"GET {service.url}/__schema did not answer a /__schema document")
            return
        self._install(service, described)
        if not service.available:
            logger.info("Service %r is available: %s.", service.name,
                        ", ".join(sorted(service.entities)) or "no entities")
        service.available = True
        service.problem = ""

    def _install(self, service: Service, described: list[Any]) -> None:
        entities: dict[str, type[RemoteSubscription]] = {}
        for entry in described:
            try:
                entity = entry.get("entity") if isinstance(entry, Mapping) else None
                owner = get_subscription(entity) if isinstance(entity, str) else None
                if owner is not None and not (is_remote(owner) and owner.service == service.name):
                    where = f"service {owner.service!r}" if is_remote(owner) else "this project"
                    logger.warning("Service %r offers %s, which %s already serves; ignored.",
                                   service.name, entity, where)
                    continue
                cls = remote_class(service.name, entry)
            except ValueError as exc:
                logger.warning("Service %r: an entity of its /__schema was ignored: %s.", service.name, exc)
                continue
            entities[cls.entity] = cls
        for gone in set(service.entities) - set(entities):
            registry[:] = [c for c in registry if c is not service.entities[gone]]
        service.entities = entities

    def _down(self, service: Service, problem: str) -> None:
        if service.available or not service.problem:
            logger.warning("Service %r is unavailable: %s. Its entities are refused until it answers.",
                           service.name, problem)
        service.available = False
        service.problem = problem

    async def authorize(self, subscription: type[RemoteSubscription], credentials: Mapping[str, str],
                        filters: Any) -> dict[str, Any]:
        import httpx

        service = self.services.get(subscription.service)
        unavailable = Refused(f"{subscription.entity} is unavailable (service {subscription.service!r} is not "
                              "answering); retry later.", "unavailable")
        if service is None or not service.available:
            raise unavailable
        try:
            response = await self.client.post(f"{service.url}/__authorize", json={
                "entity": subscription.entity, "filters": filters, "credentials": dict(credentials)})
            answer = response.json() if response.status_code == 200 else None
        except httpx.PoolTimeout:
            # This gateway's own connections to the service are all busy (a burst of subscribes): the
            # service is not down, this one subscribe is refused and retried by the client.
            raise Refused(f"{subscription.entity} is busy at the gateway; retry later.", "unavailable") from None
        except (httpx.HTTPError, ValueError) as exc:
            answer, response = None, exc
        if not isinstance(answer, dict) or not isinstance(answer.get("allowed"), bool):
            self._down(service, f"POST {service.url}/__authorize: {getattr(response, 'status_code', response)!r}")
            self.wake.set()
            raise unavailable
        if answer["allowed"]:
            server = answer.get("server_filters") or {}
            if not isinstance(server, dict):
                raise unavailable
            return server
        code = answer.get("code") if isinstance(answer.get("code"), str) else "forbidden"
        if code == "unknown_entity":
            self.wake.set()  # the service dropped it since the last read
        raise Refused(str(answer.get("message") or f"Not allowed to subscribe to {subscription.entity}."), code)

    def describe(self) -> dict[str, dict[str, Any]]:
        """Per entity served for a service: which, and whether it answers (added to ``/__schema``)."""
        return {entity: {"service": s.name, "available": s.available}
                for s in self.services.values() for entity in s.entities}

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.notices is not None:
            get_hub().remove(self.notices)
        if self.client is not None:
            await self.client.aclose()


_gateways: dict[asyncio.AbstractEventLoop, Gateway] = {}


def get_gateway() -> Gateway | None:
    """The running loop's gateway (None unless ``GATEWAY_SERVICES`` is set), started on first use."""
    services = conf.gateway_services
    if not services or not conf.service_token:
        return None
    loop = asyncio.get_running_loop()
    gateway = _gateways.get(loop)
    if gateway is None:
        for old in [lp for lp in _gateways if lp.is_closed()]:
            del _gateways[old]
        gateway = _gateways[loop] = Gateway(services, conf.service_token)
    gateway.start()
    return gateway


def announce() -> None:
    """Tell gateways this service (re)started, so they read its ``/__schema`` now, not at their next period.

    Called from ``ready()`` of a project that has a ``SERVICE_TOKEN`` and is
    not itself a gateway, on a daemon thread: a process never waits for it,
    and with Redis away it only logs (gateways poll anyway).
    """
    if not conf.service_token or conf.gateway_services:
        return

    def publish() -> None:
        from .pubsub import redis_publish

        try:
            redis_publish(NOTICE_CHANNEL, {"service": conf.service_name or "", "event": "started"}, durable=False)
        except _UNREACHABLE as exc:  # a notice is a hint: gateways poll anyway
            logger.debug("Could not announce this service to gateways: %s", exc)

    threading.Thread(target=publish, name="supergraph_messaging.announce", daemon=True).start()
