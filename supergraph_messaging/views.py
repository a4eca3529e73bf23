"""``GET /__schema``: what this service offers (subscriptions, events, cache templates)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from . import events, invalidation
from .subscriptions import describe


def schema_document() -> dict[str, Any]:
    published = []
    for registration in events.registry:
        for action, channel in registration.config.publish.items():
            published.append({
                "channel": channel,
                "action": action,
                "entity": registration.entity,
                "payload_fields": list(registration.config.payload_fields or []) or None,
                "source": registration.source,
            })
    caches = [
        {"template": r.template.template, "invalidate_on": list(r.channels), "kind": r.kind, "source": r.source}
        for r in invalidation.templates
    ]
    return {"subscriptions": describe(), "events": published, "caches": caches}


@require_GET
def schema(request: HttpRequest) -> JsonResponse:
    return JsonResponse(schema_document())
