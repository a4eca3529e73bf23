"""Who a client is, from what it presented: a session cookie, an ``Authorization`` header or a token.

Shared by ``/subscribe`` (which reads them off its own connection) and
``POST /__authorize`` (where a gateway forwards what its client presented,
so the service that owns an entity decides who may see it).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from importlib import import_module
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user
from django.contrib.auth.models import AnonymousUser
from django.contrib.auth.signals import user_logged_out
from django.dispatch import receiver
from django.http.cookie import parse_cookie
from django.utils.module_loading import import_string

from .conf import conf

logger = logging.getLogger("supergraph_messaging.auth")

#: Where a logout is announced to every process's hub (a digest of the session key, never the key).
SESSION_ENDED_CHANNEL = "sgm.session.ended"

#: ``Authorization`` schemes whose credential is a token for :func:`authenticate_token`.
TOKEN_SCHEMES = ("Token", "Bearer")


async def authenticate_token(token: str) -> Any:
    """Resolve ``connection_init.payload.token`` to a user, or ``None``.

    ``WS_TOKEN_AUTHENTICATOR`` (a dotted path to ``callable(token) -> user|None``)
    replaces the default, which accepts DRF tokens when ``rest_framework.authtoken``
    is installed.
    """
    path = conf.ws_token_authenticator
    if path:
        func = import_string(path)
        if asyncio.iscoroutinefunction(func):
            return await func(token)
        return await database_sync_to_async(func)(token)  # a sync authenticator may query the DB
    from django.apps import apps

    if not apps.is_installed("rest_framework.authtoken"):
        return None
    return await database_sync_to_async(_drf_token_user)(token)


def _drf_token_user(token: str) -> Any:
    from rest_framework.authtoken.models import Token

    found = Token.objects.select_related("user").filter(key=token).first()
    return found.user if found is not None and found.user.is_active else None


def parse_cookies(header: str) -> tuple[dict[str, str], str | None]:
    """A ``Cookie`` header's cookies, and the session key among them."""
    cookies = parse_cookie(header) if header else {}
    return cookies, cookies.get(settings.SESSION_COOKIE_NAME)


def session_user(session_key: str) -> Any:
    """Django's own ``get_user`` for this session: backend, active user and session hash all checked."""
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)

    class _Request:
        session = store

    return get_user(_Request())  # type: ignore[arg-type]  # get_user needs only .session


async def user_from(credentials: dict[str, Any]) -> Any:
    """The user these forwarded credentials name (anonymous when none is valid).

    A token (``connection_init``'s, or an ``Authorization: Token|Bearer``
    header's) must be valid: a wrong one is anonymous, never a fallback to
    the cookie, as ``/subscribe`` refuses a wrong token outright.
    """
    token = credentials.get("token")
    scheme, _, value = str(credentials.get("authorization") or "").partition(" ")
    if not token and scheme in TOKEN_SCHEMES:
        token = value
    if token:
        user = await authenticate_token(token) if isinstance(token, str) else None
        return user or AnonymousUser()
    _, session_key = parse_cookies(str(credentials.get("cookie") or ""))
    if not session_key:
        return AnonymousUser()
    return await database_sync_to_async(session_user)(session_key)


def session_digest(session_key: str) -> str:
    return hashlib.sha256(session_key.encode()).hexdigest()[:32]


@receiver(user_logged_out)
def _announce_logout(sender: Any, request: Any = None, **kwargs: Any) -> None:
    """Tell every process that this session ended, so its WebSocket subscriptions end within a second
    instead of at the next ``WS_AUTH_RECHECK_INTERVAL`` (an open one received the next event after a logout).
    Sent before Django flushes the session, so the key is still there."""
    key = getattr(getattr(request, "session", None), "session_key", None)
    if not key:
        return
    from .connection import get_redis_client
    from .exceptions import RedisUnavailable

    try:
        get_redis_client().publish(SESSION_ENDED_CHANNEL, {"session": session_digest(key)}, durable=False)
    except RedisUnavailable as exc:
        logger.warning("Could not announce a logout (%s); its WebSocket subscriptions end at the next re-check.",
                       exc)
