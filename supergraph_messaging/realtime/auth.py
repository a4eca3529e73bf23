"""Who a client is: from what it presented (a session cookie or a token), or from a gateway's assertion.

``/subscribe`` reads the credentials off its own connection. A gateway
never passes them on: it sends the service that owns an entity a signed,
short-lived assertion of the user it authenticated (:func:`sign_assertion`),
which that service's ``POST /__authorize`` turns back into a user
(:func:`asserted_user`) to decide with its own permissions.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable
from importlib import import_module
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user, get_user_model
from django.contrib.auth.models import AnonymousUser
from django.contrib.auth.signals import user_logged_out
from django.core import signing
from django.core.exceptions import ValidationError
from django.dispatch import receiver
from django.http.cookie import parse_cookie
from django.utils.module_loading import import_string

from supergraph_messaging.conf import conf

logger = logging.getLogger("supergraph_messaging.auth")

#: Where a logout is announced to every process's hub (a digest of the session key, never the key).
SESSION_ENDED_CHANNEL = "sgm.session.ended"


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


#: Signs gateway assertions only (the same key signs nothing else with this salt).
ASSERTION_SALT = "supergraph_messaging.assertion"

#: Seconds an assertion is valid: the gateway signs a new one for every subscribe and re-check.
ASSERTION_MAX_AGE = 30


class BadAssertion(Exception):
    """An assertion that is forged, expired or not signed with this service's key."""


def sign_assertion(user: Any, audience: str, key: str) -> str:
    """Who ``user`` is (id, username, staff, superuser, groups), for service ``audience``, signed with its key.

    Runs the groups query: call it off the event loop.
    """
    claims: dict[str, Any] = {"aud": audience}
    if getattr(user, "is_authenticated", False) and getattr(user, "is_active", True):
        groups: Any = getattr(user, "groups", None)
        names = sorted(groups.values_list("name", flat=True)) if hasattr(groups, "values_list") else []
        claims.update(id=str(user.pk), username=user.get_username(), staff=bool(user.is_staff),
                      superuser=bool(user.is_superuser), groups=names)
    return signing.dumps(claims, key=key, salt=ASSERTION_SALT)


def read_assertion(assertion: Any, key: str) -> dict[str, Any]:
    """The claims of an assertion signed with ``key`` within :data:`ASSERTION_MAX_AGE`, or :class:`BadAssertion`."""
    if not isinstance(assertion, str) or not assertion or len(assertion) > 8192:
        raise BadAssertion("no assertion")
    try:
        claims = signing.loads(assertion, key=key, salt=ASSERTION_SALT, max_age=ASSERTION_MAX_AGE)
    except signing.SignatureExpired as exc:
        raise BadAssertion("the assertion expired") from exc
    except signing.BadSignature as exc:
        raise BadAssertion("the assertion is not signed with this service's SERVICE_TOKEN") from exc
    if not isinstance(claims, dict):
        raise BadAssertion("the assertion is not an object")
    return claims


class AssertedUser:
    """A user this service does not store, as a gateway asserted it (like simplejwt's ``TokenUser``).

    Enough for DRF's permission classes (``IsAuthenticated``, ``IsAdminUser``)
    and for ``get_server_filters`` that read ``pk``, ``username`` or
    ``group_names``; it has no model permissions.
    """

    is_authenticated = True
    is_anonymous = False
    is_active = True

    def __init__(self, claims: dict[str, Any]) -> None:
        self.pk = self.id = claims["id"]
        self.username = str(claims.get("username") or "")
        self.is_staff = bool(claims.get("staff"))
        self.is_superuser = bool(claims.get("superuser"))
        groups = claims.get("groups")
        self.group_names = frozenset(str(g) for g in groups) if isinstance(groups, list) else frozenset()

    def get_username(self) -> str:
        return self.username

    def has_perm(self, perm: str, obj: Any = None) -> bool:
        return False

    def __str__(self) -> str:
        return self.username


def asserted_user(claims: dict[str, Any]) -> Any:
    """The user claims name: this service's own record of them when it has one (same id and username,
    active), an :class:`AssertedUser` when it has none, anonymous when the claims name nobody."""
    if "id" not in claims or not isinstance(claims.get("username"), str):
        return AnonymousUser()
    model = get_user_model()
    try:
        local = model._default_manager.filter(pk=claims["id"], **{model.USERNAME_FIELD: claims["username"]}).first()
    except (ValueError, TypeError, ValidationError):  # an id of another kind than this service's keys
        local = None
    if local is not None:
        return local if local.is_active else AnonymousUser()
    return AssertedUser(claims)


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
    from supergraph_messaging.exceptions import RedisUnavailable
    from supergraph_messaging.redis.client import get_redis_client

    try:
        get_redis_client().publish(SESSION_ENDED_CHANNEL, {"session": session_digest(key)})
    except RedisUnavailable as exc:
        logger.warning("Could not announce a logout (%s); its WebSocket subscriptions end at the next re-check.",
                       exc)


class SessionUserMiddleware:
    """``scope["user"]`` and ``scope["session"]`` from the session cookie, unless an outer stack set them.

    ``__call__`` returns the inner application's awaitable rather than
    awaiting it, when there is no session to read: the connection's whole
    life would otherwise keep one more coroutine frame per socket.
    """

    _asgi_single_callable = True  # __call__ is not a coroutine function, but this is an ASGI 3 app

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, scope: Any, receive: Any, send: Any) -> Awaitable[Any]:
        if "user" in scope:  # the project wrapped us in its own auth stack: keep its answer
            return self.inner(scope, receive, send)  # type: ignore[no-any-return]
        header = next((value for name, value in scope.get("headers", ()) if name == b"cookie"), b"")
        cookies, session_key = parse_cookies(header.decode("latin1"))
        session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
        if session_key:
            return self._with_user(dict(scope, cookies=cookies, session=session), session_key, receive, send)
        return self.inner(dict(scope, cookies=cookies, session=session, user=AnonymousUser()),  # type: ignore[no-any-return]
                          receive, send)

    async def _with_user(self, scope: dict[str, Any], session_key: str, receive: Any, send: Any) -> Any:
        scope["user"] = await database_sync_to_async(session_user)(session_key)
        return await self.inner(scope, receive, send)
