"""``POST /__authorize``: the owning service decides who may subscribe to its entities through a gateway.

A gateway serves other services' entities at its own ``/subscribe``; access
to them stays with the service. On each subscribe (and re-check) the gateway
sends the entity, the client's filters and a signed assertion of the user it
authenticated, never the client's cookie or token; this service checks the
signature against its own ``SERVICE_TOKEN`` and answers with its own
``Subscription.has_permission`` and ``get_server_filters``, which the
gateway then enforces. Only callers with the ``SERVICE_TOKEN`` may ask.
"""

from __future__ import annotations

import json
from typing import Any

from channels.db import database_sync_to_async
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from supergraph_messaging.conf import conf
from supergraph_messaging.gateway.remote import is_remote
from supergraph_messaging.gateway.schema_views import has_service_token
from supergraph_messaging.realtime.auth import BadAssertion, asserted_user, read_assertion
from supergraph_messaging.realtime.filters import FilterError
from supergraph_messaging.realtime.subscriptions import get_subscription


def _answer(allowed: bool, code: str = "", message: str = "", server_filters: Any = None) -> JsonResponse:
    body: dict[str, Any] = {"allowed": allowed}
    if allowed:
        body["server_filters"] = server_filters or {}
    else:
        body["code"], body["message"] = code, message
    return JsonResponse(body)


@csrf_exempt  # authenticated by the service token in a header, never by a cookie of its own
@require_POST
async def authorize(request: HttpRequest) -> JsonResponse:
    if not has_service_token(request):
        return JsonResponse({"detail": "POST /__authorize needs 'Authorization: Service <SERVICE_TOKEN>'."},
                            status=403)
    try:
        body = json.loads(request.body)
    except (ValueError, RecursionError):
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("entity"), str):
        return JsonResponse({"detail": "Expected a JSON object with 'entity', 'filters' and 'assertion'."},
                            status=400)
    try:
        claims = read_assertion(body.get("assertion"), conf.service_token or "")
    except BadAssertion as exc:
        return JsonResponse({"detail": f"POST /__authorize needs the gateway's signed user assertion: {exc}."},
                            status=403)
    subscription = get_subscription(body["entity"])
    if subscription is None or is_remote(subscription):  # a gateway answers only for its own entities
        return _answer(False, "unknown_entity", f"Unknown entity {body['entity']!r}.")
    user = await database_sync_to_async(asserted_user)(claims)
    server = await database_sync_to_async(subscription.access)(user)
    if server is None:
        return _answer(False, "forbidden", f"Not allowed to subscribe to {subscription.entity}.")
    try:
        subscription.parse_filters(body.get("filters"), conf.ws_max_in_values)
        subscription.parse_filters(server, 10**6, declared=False)
    except FilterError as exc:
        return _answer(False, exc.code, str(exc))
    return _answer(True, server_filters=server)
