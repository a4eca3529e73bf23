"""Attack 9 and 10: the admin cache browser with sessions on Redis, keys of other services, binary keys."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client, override_settings

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

BASE = "/admin/supergraph_messaging/cachekey/"
SESSIONS_ON_REDIS = {
    "SESSION_ENGINE": "django.contrib.sessions.backends.cache",
    "SUPERGRAPH_MESSAGING": {"DEFAULT_TTL": 3600},  # the default namespace: no ADMIN_KEY_PATTERNS
}


def staff(name: str, *perms: str, superuser: bool = False) -> Client:
    user = User.objects.create_user(name, password="pw", is_staff=True, is_superuser=superuser)
    for codename in perms:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client = Client()
    assert client.login(username=name, password="pw")  # a real session, stored in Redis
    return client


def session_keys(conn: Any) -> list[bytes]:
    return [k for k in conn.scan_iter(match="*django.contrib.sessions*")]


@override_settings(**SESSIONS_ON_REDIS)
def test_a_view_only_staff_user_never_sees_or_reaches_sessions(redis_conn: Any) -> None:
    staff("root", superuser=True)  # the account an attacker wants
    viewer = staff("viewer", "view_cachekey")
    sessions = session_keys(redis_conn)
    assert len(sessions) == 2
    redis_conn.set("camera:mac:AA", b'{"id": 1}')  # a registered template (tests.testapp.caching)
    redis_conn.set("other-service:secret", b'"theirs"')
    listing = viewer.get(BASE, {"q": "*"}).content.decode()
    visible_sessions = sum(s.decode() in listing for s in sessions) + listing.count("sessions.cache")
    print(f"\nsession keys visible to a view-only staff user: {visible_sessions}")
    assert visible_sessions == 0
    assert "camera:mac:AA" in listing and "other-service:secret" not in listing
    for session in sessions:
        assert viewer.get(BASE + "key/", {"key": session.decode()}).status_code == 403
    assert viewer.get(BASE + "key/", {"key": "other-service:secret"}).status_code == 403
    # Even a superuser who opts in to every key never sees sessions.
    root = Client()
    root.force_login(User.objects.get(username="root"))
    everything = root.get(BASE, {"q": "*", "all": "1"}).content.decode()
    assert "other-service:secret" in everything and "sessions.cache" not in everything


@override_settings(**SESSIONS_ON_REDIS)
def test_invalidate_everything_stays_inside_the_namespace(redis_conn: Any) -> None:
    deleter = staff("deleter", "view_cachekey", "delete_cachekey")
    redis_conn.mset({"camera:mac:AA": b"1", "camera:mac:BB": b"1", "other-service:x": b"1", "user:1": b"1"})
    sessions_before = session_keys(redis_conn)
    preview = deleter.post(BASE + "invalidate/", {"pattern": "*"}).content.decode()
    assert "2 keys match" in preview
    r = deleter.post(BASE + "invalidate/", {"pattern": "*", "confirm": "yes", "retype": "*"}, follow=True)
    html = r.content.decode()
    assert "Invalidated 2 keys" in html and "left alone" in html
    assert redis_conn.exists("camera:mac:AA", "camera:mac:BB") == 0
    assert redis_conn.exists("other-service:x", "user:1") == 2
    assert session_keys(redis_conn) == sessions_before
    # Deleting a session key by name is refused too.
    r = deleter.post(BASE + "delete/", {"keys": [s.decode() for s in sessions_before]}, follow=True)
    assert "outside the app" in r.content.decode() and session_keys(redis_conn) == sessions_before


def test_a_binary_key_round_trips_and_can_be_deleted(redis_conn: Any) -> None:
    raw = b"camera:mac:\xff\xfe"
    redis_conn.set(raw, b'{"id": 9}')
    deleter = staff("deleter", "view_cachekey", "delete_cachekey")
    listing = deleter.get(BASE, {"q": "camera:*"})
    (row,) = [r for r in listing.context["rows"] if "binary key" in r.key]
    assert row.type == "string"
    assert deleter.get(BASE + "key/", {"key": row.token}).status_code == 200
    r = deleter.post(BASE + "delete/", {"keys": [row.token], "q": "*"}, follow=True)
    assert "Deleted 1 of 1" in r.content.decode()
    assert not redis_conn.exists(raw)
