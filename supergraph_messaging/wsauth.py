"""Cookies, session and user for ``/subscribe`` in one step.

Channels' ``AuthMiddlewareStack`` is three middlewares: three scope copies
and three coroutine frames held for the whole life of every connection
(about 4 KB of a 10,000-connection process's memory each), a session
wrapper run on every frame sent, and a thread hop to load the user even
for a client with no session cookie. A subscription needs none of that:
it never writes the session, it only reads who the user is, which it
resolves as ``POST /__authorize`` and the re-checks do
(:func:`.credentials.session_user`: Django's ``get_user``).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth.models import AnonymousUser

from .credentials import parse_cookies, session_user


class SessionUserMiddleware:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        if "user" in scope:  # the project wrapped us in its own auth stack: keep its answer
            return await self.inner(scope, receive, send)
        header = next((value for name, value in scope.get("headers", ()) if name == b"cookie"), b"")
        cookies, session_key = parse_cookies(header.decode("latin1"))
        scope = dict(scope, cookies=cookies, session=import_module(settings.SESSION_ENGINE).SessionStore(session_key),
                     user=await database_sync_to_async(session_user)(session_key) if session_key else AnonymousUser())
        return await self.inner(scope, receive, send)
