"""``GET /__schema`` and ``GET /__asyncapi``: what this service offers, to whom ``SCHEMA_ACCESS`` allows.

Both describe the project's attack surface (entities, filters, channels,
cache templates), so by default only staff and other services (with the
shared ``SERVICE_TOKEN``) may read them. Neither names a Python module.
"""

from __future__ import annotations

import hmac
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from supergraph_messaging.cache import invalidation
from supergraph_messaging.conf import conf
from supergraph_messaging.events import config
from supergraph_messaging.gateway.remote import get_gateway
from supergraph_messaging.realtime.subscriptions import describe

SERVICE_SCHEME = "Service"


def schema_document() -> dict[str, Any]:
    published = []
    for registration in config.registry:
        for action, channel in registration.config.publish.items():
            published.append({
                "channel": channel,
                "action": action,
                "entity": registration.entity,
                "payload_fields": list(registration.config.payload_fields or []) or None,
            })
    caches = [
        {"template": r.template.template, "invalidate_on": list(r.channels), "kind": r.kind}
        for r in invalidation.templates
    ]
    return {"subscriptions": describe(), "events": published, "caches": caches}


async def _federated() -> None:
    """On a gateway, the services' entities are read before the first answer that lists them."""
    gateway = get_gateway()
    if gateway is not None and not gateway.discovered.is_set():
        await gateway.ready()


def has_service_token(request: HttpRequest) -> bool:
    """Whether the request carries ``Authorization: Service <SERVICE_TOKEN>`` (compared in constant time)."""
    expected = conf.service_token
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if not expected or scheme != SERVICE_SCHEME:
        return False
    return hmac.compare_digest(token.encode(), expected.encode())


def may_read_schema(request: HttpRequest, access: str | None = None) -> bool:
    """Whether ``SCHEMA_ACCESS`` (or ``access``: on a gateway, the strictest of its services') lets the
    requester read ``/__schema`` and ``/__asyncapi``."""
    access = access or conf.schema_access
    if access == "public" or has_service_token(request):
        return True
    user = getattr(request, "user", None)
    return access == "staff" and bool(user is not None and user.is_active and user.is_staff)


def _refused(access: str) -> JsonResponse:
    needs = {"staff": "a staff user's session or the service token",
             "token": "the service token ('Authorization: Service <token>')"}[access]
    where = "" if access == conf.schema_access else " (the strictest SCHEMA_ACCESS of the services behind it)"
    return JsonResponse({"detail": f"SCHEMA_ACCESS is {access!r}{where}: this needs {needs}."}, status=403)


async def _access() -> str:
    """The access rule of this project's schema: on a gateway, once its services have been read."""
    await _federated()
    gateway = get_gateway()
    return gateway.schema_access() if gateway is not None else conf.schema_access


@require_GET
async def schema(request: HttpRequest) -> JsonResponse:
    access = await _access()
    if not await sync_to_async(may_read_schema)(request, access):
        return _refused(access)
    document = schema_document()
    document["access"] = access  # a gateway shows this service's entities no more openly than this would
    gateway = get_gateway()
    if gateway is not None:  # where each federated entity lives, and whether it answers
        served = gateway.describe()
        for entry in document["subscriptions"]:
            entry.update(served.get(entry["entity"], {}))
    return JsonResponse(document)


@require_GET
async def asyncapi(request: HttpRequest) -> JsonResponse:
    from supergraph_messaging.gateway.asyncapi import document

    access = await _access()
    if not await sync_to_async(may_read_schema)(request, access):
        return _refused(access)
    return JsonResponse(document(request.get_host()), json_dumps_params={"indent": 2})
