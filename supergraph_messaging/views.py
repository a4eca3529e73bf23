"""``GET /__schema`` and ``GET /__asyncapi``: what this service offers, to whom ``SCHEMA_ACCESS`` allows.

Both describe the project's attack surface (entities, filters, channels,
cache templates), so by default only staff and other services (with the
shared ``SERVICE_TOKEN``) may read them. Neither names a Python module.
"""

from __future__ import annotations

import hmac
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from . import events, invalidation
from .conf import conf
from .subscriptions import describe

SERVICE_SCHEME = "Service"


def schema_document() -> dict[str, Any]:
    published = []
    for registration in events.registry:
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


def has_service_token(request: HttpRequest) -> bool:
    """Whether the request carries ``Authorization: Service <SERVICE_TOKEN>`` (compared in constant time)."""
    expected = conf.service_token
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if not expected or scheme != SERVICE_SCHEME:
        return False
    return hmac.compare_digest(token.encode(), expected.encode())


def may_read_schema(request: HttpRequest) -> bool:
    access = conf.schema_access
    if access == "public" or has_service_token(request):
        return True
    user = getattr(request, "user", None)
    return access == "staff" and bool(user is not None and user.is_active and user.is_staff)


def _refused() -> JsonResponse:
    needs = {"staff": "a staff user's session or the service token",
             "token": "the service token ('Authorization: Service <token>')"}[conf.schema_access]
    return JsonResponse({"detail": f"SCHEMA_ACCESS is {conf.schema_access!r}: this needs {needs}."}, status=403)


@require_GET
def schema(request: HttpRequest) -> JsonResponse:
    return JsonResponse(schema_document()) if may_read_schema(request) else _refused()


@require_GET
def asyncapi(request: HttpRequest) -> JsonResponse:
    from .asyncapi import document

    if not may_read_schema(request):
        return _refused()
    return JsonResponse(document(request.get_host()), json_dumps_params={"indent": 2})
