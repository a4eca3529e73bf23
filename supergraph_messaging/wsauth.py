"""Cookies, session and user for ``/subscribe`` in one step.

Channels' ``AuthMiddlewareStack`` is three middlewares: three scope copies
and three coroutine frames held for the whole life of every connection
(about 4 KB of a 10,000-connection process's memory each), a session
wrapper run on every frame sent, and a thread hop to load the user even
for a client with no session cookie. A subscription needs none of that:
it never writes the session, it only reads who the user is. The user is
resolved with Channels' own ``get_user`` (same session-hash check).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from channels.auth import get_user
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http.cookie import parse_cookie


class SessionUserMiddleware:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        if "user" in scope:  # the project wrapped us in its own auth stack: keep its answer
            return await self.inner(scope, receive, send)
        header = next((value for name, value in scope.get("headers", ()) if name == b"cookie"), b"")
        cookies = parse_cookie(header.decode("latin1")) if header else {}
        session_key = cookies.get(settings.SESSION_COOKIE_NAME)
        scope = dict(scope, cookies=cookies, session=import_module(settings.SESSION_ENGINE).SessionStore(session_key))
        scope["user"] = await get_user(scope) if session_key else AnonymousUser()
        return await self.inner(scope, receive, send)
