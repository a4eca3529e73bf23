"""Federation: a gateway serves other services' subscriptions (``GATEWAY_SERVICES``), each service describes
itself (``/__schema``, AsyncAPI) and decides who may subscribe (``/__authorize``)."""

from __future__ import annotations

from supergraph_messaging.gateway.remote import Gateway, RemoteSubscription, get_gateway

__all__ = ["Gateway", "RemoteSubscription", "get_gateway"]
