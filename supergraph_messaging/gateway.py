"""Gateway mode: other services' subscriptions served at this project's ``/subscribe``, their authority kept.

With ``GATEWAY_SERVICES`` set, this process reads each service's
``/__schema`` (at start, when a service announces itself on Redis, and on a
period) and registers a :class:`RemoteSubscription` per entity. Clients see
them exactly like local ones: the filters, field types and field lists the
service declared are checked here, and events come from the same Redis
channels through the same hub.

A service is trusted with no more than it is configured to own. It serves
only the entities ``GATEWAY_SERVICES`` gives it (or, unconfigured, those no
other service described first) on channels in its configured prefixes (or,
unconfigured, exact channels no other service claimed first); a glob wider
than its prefixes, and ``*``, are refused with an ERROR naming both parties.
Access is decided by the owning service, but from what the gateway itself
established: the gateway authenticates its client (session or token) and
sends the service's ``POST /__authorize`` a short-lived assertion of who the
user is, signed with that service's own ``SERVICE_TOKEN``. A client's cookie
or token never leaves the gateway, and one service's key opens nothing at
another. Each service is read by a loop of its own, with a total deadline
and bounds in bytes and entities, so one slow or hostile service delays
nobody else.

A service that does not answer makes only its own entities ``unavailable``
(new subscribes are refused with that code; subscriptions already open stay,
since their events come from Redis, not from the service's web process); the
next successful read of its ``/__schema`` brings them back.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeGuard

from channels.db import database_sync_to_async

from .conf import ServiceEntry, conf
from .connection import REDIS_ERRORS
from .credentials import sign_assertion
from .exceptions import RedisUnavailable
from .hub import Route, get_hub
from .keys import glob_head, is_glob
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
    async def authorize(cls, user: Any, filters: Any) -> dict[str, Any]:
        """The server filters the owning service imposes for ``user``; :class:`Refused` if none."""
        gateway = get_gateway()
        if gateway is None:
            raise Refused(f"{cls.entity} belongs to service {cls.service!r}, which is no longer configured.",
                          "unavailable")
        return await gateway.authorize(cls, user, filters)


def is_remote(subscription: type[Subscription]) -> TypeGuard[type[RemoteSubscription]]:
    return issubclass(subscription, RemoteSubscription)


#: Bounds on one entity's description (a service's /__schema is input like any other).
_MAX_CHANNELS, _MAX_FILTERS, _MAX_FIELDS, _MAX_NAME, _MAX_DESCRIPTION = 50, 100, 500, 200, 2000


def _name(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= _MAX_NAME


def check_entry(described: Any) -> dict[str, Any]:
    """One entry of a service's ``/__schema`` ``subscriptions``, checked and bounded (ValueError if not)."""
    if not isinstance(described, Mapping):
        raise ValueError("an entry is not an object")
    entity, channels, filters = described.get("entity"), described.get("channels"), described.get("filters") or {}
    if not _name(entity):
        raise ValueError("an entry has no entity")
    if not isinstance(channels, list) or not channels or not all(_name(c) for c in channels):
        raise ValueError(f"{entity} lists no channels")
    if len(channels) > _MAX_CHANNELS:
        raise ValueError(f"{entity} lists {len(channels)} channels (at most {_MAX_CHANNELS})")
    if not isinstance(filters, Mapping) or len(filters) > _MAX_FILTERS or not all(
            _name(name) and isinstance(ops, list) and all(op in OPERATORS for op in ops)
            for name, ops in filters.items()):
        raise ValueError(f"{entity} has filters this version does not know: {str(filters)[:200]}")
    field_types: dict[str, list[str]] = {}
    raw_types = described.get("field_types")
    for name, kinds in (raw_types.items() if isinstance(raw_types, Mapping) else ()):
        if name in filters and isinstance(kinds, list):
            field_types[name] = [k for k in kinds if k in _TYPES_BY_NAME]
    fields = described.get("fields")
    if isinstance(fields, list) and (len(fields) > _MAX_FIELDS or not all(_name(f) for f in fields)):
        raise ValueError(f"{entity} lists more than {_MAX_FIELDS} fields, or a field that is not a name")
    return {
        "entity": entity,
        "channels": list(channels),
        "filters": {name: list(ops) for name, ops in filters.items()},
        "field_types": field_types,
        "fields": list(fields) if isinstance(fields, list) else None,
        "description": str(described.get("description") or "")[:_MAX_DESCRIPTION],
        "requires_auth": bool(described.get("requires_auth")),
    }


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
        "field_types": {name: tuple(_TYPES_BY_NAME[k] for k in kinds)
                        for name, kinds in spec["field_types"].items() if kinds},
        "fields": spec["fields"],
        "description": spec["description"],
        "service": service,
        "remote_requires_auth": spec["requires_auth"],
    }
    return type(f"Remote{spec['entity']}", (RemoteSubscription,), attrs)


@dataclass
class Service:
    name: str
    entry: ServiceEntry
    available: bool = False
    entities: dict[str, type[RemoteSubscription]] = field(default_factory=dict)
    problem: str = ""
    #: The ``SCHEMA_ACCESS`` its /__schema reported ("token", the strictest, until it reports one).
    access: str = "token"
    #: Set to read its /__schema now (a notice, a refused authorize); each service has its own loop.
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    tried: bool = False
    #: Until then (monotonic), a failing read is retried every 0.25 s instead of backing off.
    eager_until: float = 0.0
    #: The last /__schema body read (its digest), and why it was refused ("" if it was not).
    digest: bytes = b""
    refused: str = ""

    @property
    def url(self) -> str:
        return self.entry.url.rstrip("/")


class _NoticeSink:
    """A hub sink that only wakes the gateway: any message on the notice channel means "read again"."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def deliver(self, route: Route, channel: str, data_json: str, position: Position | None = None) -> None:
        self.gateway.wake_all()

    def gap(self, route: Route, reason: str = "reconnected") -> None:
        self.gateway.wake_all()  # a notice may have been missed while Redis was away


#: The order of ``SCHEMA_ACCESS`` values, least strict first.
ACCESS_LEVELS = ("public", "staff", "token")

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
        #: entity -> the service that described it first (or was configured with it): nobody else gets it.
        self.owners: dict[str, str] = {name: s.name for s in self.services.values() for name in s.entry.entities or ()}
        #: exact channel -> the service that claimed it first (services without configured prefixes).
        self.channel_owners: dict[str, str] = {}
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
        while (a service announces from ``ready()``, a moment before its server listens)."""
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
            route = Route(_NoticeSink(self), "gateway", "", [NOTICE_CHANNEL], [], None)
            try:
                await get_hub().add(route)
            except _UNREACHABLE as exc:
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

    def _claim(self, service: Service, spec: Mapping[str, Any], local_channels: set[str]) -> str:
        """Why ``service`` may not serve this entity, or "" (then its entity and channels are pinned to it).

        ``local_channels``: those of this project's own entities, which no service may claim.
        """
        entity = spec["entity"]
        owner = self.owners.get(entity)
        if owner is not None and owner != service.name:
            return f"entity {entity} belongs to service {owner!r}"
        if service.entry.entities is not None and entity not in service.entry.entities:
            return f"entity {entity} is not among the entities GATEWAY_SERVICES gives it"
        local = get_subscription(entity)
        if local is not None and not is_remote(local):
            return f"entity {entity} is this project's own"
        for channel in spec["channels"]:
            head = glob_head(channel)
            if not head:
                return f"channel {channel!r} of {entity} would match every channel"
            others = [(name, prefix) for name, s in self.services.items() if name != service.name
                      for prefix in s.entry.channels or () if head.startswith(prefix)]
            if others:
                return f"channel {channel!r} of {entity} lies in service {others[0][0]!r}'s prefix {others[0][1]!r}"
            if service.entry.channels is not None:
                if not any(head.startswith(prefix) for prefix in service.entry.channels):
                    return (f"channel {channel!r} of {entity} is outside its channel prefixes "
                            f"({', '.join(map(repr, service.entry.channels))})")
                continue
            if is_glob(channel):
                return f"channel {channel!r} of {entity} is a glob, and GATEWAY_SERVICES gives it no channel prefixes"
            if channel in local_channels:
                return f"channel {channel!r} of {entity} is this project's own"
            claimant = self.channel_owners.get(channel)
            if claimant is not None and claimant != service.name:
                return f"channel {channel!r} of {entity} belongs to service {claimant!r}"
        return ""

    async def _install(self, service: Service, specs: list[dict[str, Any]]) -> None:
        entities: dict[str, type[RemoteSubscription]] = {}
        local_channels = {c for cls in registry if not is_remote(cls) for c in cls.channels}
        for n, spec in enumerate(specs):
            if n and n % _INSTALL_STEP == 0:
                await asyncio.sleep(0)  # other services' reads and the WebSockets go on meanwhile
            problem = self._claim(service, spec, local_channels)
            if problem:
                self._report(service, problem, f"Service {service.name!r} describes what it may not serve: "
                                               f"{problem}; refused.")
                continue
            self.owners.setdefault(spec["entity"], service.name)
            if service.entry.channels is None:
                for channel in spec["channels"]:
                    self.channel_owners.setdefault(channel, service.name)
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


def parse_schema(body: bytes, max_entities: int) -> tuple[list[dict[str, Any]], str, list[str]] | str:
    """A service's ``/__schema`` body -> (valid entity specs, its SCHEMA_ACCESS, problems), or what is wrong.

    Pure (no registry, no classes), so that it runs on a thread. The cyclic garbage collector is paused
    while the body is decoded: 8,000 entities are some 30,000 new containers, enough to start a full
    collection of the whole process (every Django object) while this thread holds the GIL, which stalled
    the gateway's WebSockets for up to 85 ms. The decoded document is freed by reference counting.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return "the answer is not JSON"
    finally:
        if collecting:
            gc.enable()
    described = document.get("subscriptions") if isinstance(document, dict) else None
    if not isinstance(described, list):
        return "the answer is not a /__schema document"
    if len(described) > max_entities:
        return f"it describes {len(described)} entities; GATEWAY_MAX_ENTITIES is {max_entities}"
    access = document.get("access")
    specs: list[dict[str, Any]] = []
    problems: list[str] = []
    for entry in described:
        try:
            specs.append(check_entry(entry))
        except ValueError as exc:
            problems.append(str(exc))
    return specs, access if access in ACCESS_LEVELS else "token", problems


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
