"""The live page, and its /api/ calls passed to the service that owns each path (demo plumbing only).

A real deployment routes HTTP in its load balancer; the demo's browser page
talks to one origin so that it needs no CORS set-up.
"""

from __future__ import annotations

import httpx
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt

_client: httpx.AsyncClient | None = None


def index(request: HttpRequest) -> HttpResponse:
    return render(request, "index.html", {"admin_url": settings.ADMIN_URL, "services": settings.SERVICES})


@csrf_exempt  # the service behind checks its own CSRF; nothing here acts on a cookie
async def api(request: HttpRequest, resource: str, rest: str) -> HttpResponse:
    global _client
    service = settings.API_ROUTES.get(resource)
    if service is None:
        return JsonResponse({"detail": f"No service serves /api/{resource}/."}, status=404)
    if _client is None:
        _client = httpx.AsyncClient(timeout=10)
    url = f"{settings.SERVICES[service]['url']}/api/{resource}/{rest}"
    try:
        answer = await _client.request(request.method or "GET", url, params=request.GET, content=request.body,
                                       headers={"Content-Type": request.content_type or "application/json"})
    except httpx.HTTPError as exc:
        return JsonResponse({"detail": f"Service {service!r} did not answer: {type(exc).__name__}."}, status=502)
    return HttpResponse(answer.content, status=answer.status_code,
                        content_type=answer.headers.get("content-type", "application/json"))
