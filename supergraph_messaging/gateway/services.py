"""The services behind a gateway, and who may serve what.

An entity, and a channel, belongs to the service ``GATEWAY_SERVICES`` gives
it; unconfigured, to the first service that described it. No service may
take this project's own entities or channels, a channel in another service's
prefixes, or a channel that would match every channel.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from supergraph_messaging.conf import ServiceEntry
from supergraph_messaging.redis.keys import glob_head, is_glob

if TYPE_CHECKING:
    from supergraph_messaging.gateway.remote import RemoteSubscription


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


class Ownership:
    """Which service owns each entity and exact channel, and whether a service may serve an entity."""

    def __init__(self, services: Mapping[str, Service]) -> None:
        self.services = services
        #: entity -> the service that described it first (or was configured with it): nobody else gets it.
        self.owners: dict[str, str] = {name: s.name for s in services.values() for name in s.entry.entities or ()}
        #: exact channel -> the service that claimed it first (services without configured prefixes).
        self.channel_owners: dict[str, str] = {}

    def claim(self, service: Service, spec: Mapping[str, Any], local_entities: set[str],
              local_channels: set[str]) -> str:
        """Why ``service`` may not serve this entity, or "" (then its entity and channels are pinned to it).

        ``local_entities``, ``local_channels``: this project's own, which no service may claim.
        """
        entity = spec["entity"]
        owner = self.owners.get(entity)
        if owner is not None and owner != service.name:
            return f"entity {entity} belongs to service {owner!r}"
        if service.entry.entities is not None and entity not in service.entry.entities:
            return f"entity {entity} is not among the entities GATEWAY_SERVICES gives it"
        if entity in local_entities:
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

    def pin(self, service: Service, spec: Mapping[str, Any]) -> None:
        """``service`` serves this entity now: nobody else gets it, nor (unconfigured) its channels."""
        self.owners.setdefault(spec["entity"], service.name)
        if service.entry.channels is None:
            for channel in spec["channels"]:
                self.channel_owners.setdefault(channel, service.name)
