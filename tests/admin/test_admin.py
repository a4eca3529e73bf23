from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.contrib.admin.models import DELETION, LogEntry
from django.contrib.auth.models import Permission, User
from django.test import Client, override_settings

from tests.conftest import EventCollector
from tests.support.redis_server import RedisServer

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("topology")]

BASE = "/admin/supergraph_messaging/cachekey/"


def user(name: str, *perms: str, staff: bool = True) -> User:
    u = User.objects.create_user(name, password="pw", is_staff=staff)
    for codename in perms:
        u.user_permissions.add(Permission.objects.get(codename=codename))
    return u


def client_for(u: User | None, csrf: bool = False) -> Client:
    c = Client(enforce_csrf_checks=csrf)
    if u is not None:
        c.force_login(u)
    return c


@pytest.fixture
def keys(redis_conn: Any) -> Any:
    from supergraph_messaging.cache import stats

    stats.flush()  # nothing pending: the flusher must not add its hash to the counted keyspace
    redis_conn.delete(stats.STATS_KEY)
    redis_conn.set("camera:mac:AA", json.dumps({"id": 1, "model": "Hik"}), ex=100)
    redis_conn.set("camera:mac:BB", json.dumps({"id": 2}))
    redis_conn.set("user:1", "plain text")
    redis_conn.set("bin", b"\xff\x00\xfe")
    redis_conn.rpush("a-list", "x", "y")
    return redis_conn


PAGES = ["", "key/?key=camera:mac:AA", "channels/", "templates/", "invalidate/", "streams/"]


@pytest.mark.parametrize("page", PAGES)
def test_anonymous_is_sent_to_login(keys: Any, page: str) -> None:
    r = client_for(None).get(BASE + page)
    assert r.status_code == 302 and "/admin/login/" in r["Location"]


@pytest.mark.parametrize("page", PAGES)
def test_staff_without_permission_gets_403(keys: Any, page: str) -> None:
    assert client_for(user("nobody")).get(BASE + page).status_code == 403


def test_non_staff_cannot_enter(keys: Any) -> None:
    r = client_for(user("plain", "view_cachekey", "delete_cachekey", staff=False)).get(BASE)
    assert r.status_code == 302 and "/admin/login/" in r["Location"]


def test_view_only_browses_but_cannot_delete(keys: Any) -> None:
    c = client_for(user("viewer", "view_cachekey"))
    r = c.get(BASE)
    assert r.status_code == 200
    html = r.content.decode()
    for key in ("camera:mac:AA", "camera:mac:BB", "user:1", "a-list"):
        assert key in html
    assert "delete-selected" not in html
    r = c.get(BASE, {"q": "camera:*"})
    assert "camera:mac:AA" in r.content.decode() and "user:1" not in r.content.decode()
    assert c.post(BASE + "delete/", {"keys": ["user:1"]}).status_code == 403
    assert c.post(BASE + "invalidate/", {"pattern": "camera:*", "confirm": "yes"}).status_code == 403
    assert keys.exists("user:1", "camera:mac:AA", "camera:mac:BB") == 3


def test_key_detail_pretty_json_text_binary(keys: Any) -> None:
    c = client_for(user("viewer", "view_cachekey"))
    html = c.get(BASE + "key/", {"key": "camera:mac:AA"}).content.decode()
    assert '"model": "Hik"' in html.replace("&quot;", '"') and "string" in html
    assert "plain text" in c.get(BASE + "key/", {"key": "user:1"}).content.decode()
    assert "Binary value" in c.get(BASE + "key/", {"key": "bin"}).content.decode()
    assert "x\ny" in c.get(BASE + "key/", {"key": "a-list"}).content.decode()


def test_delete_selected_needs_csrf_then_deletes_and_logs(keys: Any) -> None:
    admin_user = user("deleter", "view_cachekey", "delete_cachekey")
    strict = client_for(admin_user, csrf=True)
    assert strict.post(BASE + "delete/", {"keys": ["camera:mac:AA"]}).status_code == 403
    assert keys.exists("camera:mac:AA")
    # With the token from the page, as a browser would send it.
    page = strict.get(BASE)
    token = page.cookies["csrftoken"].value if "csrftoken" in page.cookies else strict.cookies["csrftoken"].value
    r = strict.post(BASE + "delete/", {"keys": ["camera:mac:AA", "user:1"], "csrfmiddlewaretoken": token,
                                       "q": "*"}, follow=True)
    assert r.status_code == 200
    assert "Deleted 2 of 2 selected keys" in r.content.decode()
    assert keys.exists("camera:mac:AA", "user:1") == 0 and keys.exists("camera:mac:BB")
    entries = LogEntry.objects.filter(user=admin_user, action_flag=DELETION).order_by("object_repr")
    assert [e.object_repr for e in entries] == ["camera:mac:AA", "user:1"]


def test_invalidate_pattern_confirmation(keys: Any) -> None:
    admin_user = user("inv", "view_cachekey", "delete_cachekey")
    c = client_for(admin_user)
    preview = c.post(BASE + "invalidate/", {"pattern": "camera:*"})
    html = preview.content.decode()
    assert preview.status_code == 200 and "2 keys match" in html and "camera:mac:BB" in html
    assert keys.exists("camera:mac:AA", "camera:mac:BB") == 2  # nothing deleted by the preview
    r = c.post(BASE + "invalidate/", {"pattern": "camera:*", "confirm": "yes"}, follow=True)
    assert "Invalidated 2 keys" in r.content.decode()
    assert keys.exists("camera:mac:AA", "camera:mac:BB") == 0 and keys.exists("user:1")
    entry = LogEntry.objects.get(user=admin_user)
    assert entry.object_repr == "pattern:camera:*" and "camera:*" in entry.change_message


@pytest.mark.parametrize("pattern", ["*", ""])
def test_invalidate_everything_must_be_retyped(keys: Any, pattern: str) -> None:
    c = client_for(user("inv", "view_cachekey", "delete_cachekey"))
    assert "retype" in c.post(BASE + "invalidate/", {"pattern": pattern}).content.decode()
    r = c.post(BASE + "invalidate/", {"pattern": pattern, "confirm": "yes"})
    assert r.status_code == 400 and keys.dbsize() == 5
    r = c.post(BASE + "invalidate/", {"pattern": pattern, "confirm": "yes", "retype": "*"}, follow=True)
    assert "Invalidated 5 keys" in r.content.decode() and keys.dbsize() == 0


def test_script_in_key_and_value_is_escaped(redis_conn: Any) -> None:
    redis_conn.set("<script>alert('k')</script>", json.dumps("<script>alert('v')</script>"))
    c = client_for(user("viewer", "view_cachekey"))
    for html in (c.get(BASE).content.decode(),
                 c.get(BASE + "key/", {"key": "<script>alert('k')</script>"}).content.decode()):
        assert "<script>alert" not in html
        assert "&lt;script&gt;alert(&#x27;k&#x27;)&lt;/script&gt;" in html


def test_scan_paging_covers_every_key_once(redis_conn: Any, topology: str) -> None:
    """On a Cluster the pages walk every primary, and the cursor names the node it continues on."""
    redis_conn.mset({f"page:{i}": i for i in range(5000)})
    c = client_for(user("viewer", "view_cachekey"))
    seen: list[str] = []
    url = BASE + "?q=page:*"
    pages = 0
    while url:
        r = c.get(url)
        pages += 1
        rows = r.context["rows"]
        seen.extend(row.key for row in rows)
        url = BASE + r.context["next_url"] if r.context["next_url"] else ""
        if url and topology == "cluster":
            assert re.search(r"cursor=127\.0\.0\.1%3A\d+%2F\d+", url), url
    assert pages > 1
    assert sorted(set(seen)) == sorted(f"page:{i}" for i in range(5000))


def test_channels_and_templates_pages(redis_conn: Any) -> None:
    from tests.testapp import caching

    caching.camera_by_mac("AA")
    c = client_for(user("viewer", "view_cachekey"))
    with EventCollector("admin.visible"):
        html = c.get(BASE + "channels/").content.decode()
    assert "admin.visible" in html and "CameraEvents" in html and "camera.created" in html
    html = c.get(BASE + "templates/").content.decode()
    assert "camera:mac:{mac_address}" in html and "camera.updated" in html


@pytest.mark.topology("single")  # its own Redis, stopped
def test_redis_down_shows_an_error_not_a_500(own_redis: RedisServer) -> None:
    c = client_for(user("viewer", "view_cachekey"))
    with override_settings(SUPERGRAPH_MESSAGING={"REDIS_URL": own_redis.url}):
        own_redis.stop()
        r = c.get(BASE)
    assert r.status_code == 200 and "unreachable" in r.content.decode()


def test_streams_page_shows_length_groups_lag_pending_and_dead_letters(redis_conn: Any) -> None:
    from supergraph_messaging import publish_event, redis_publish
    from supergraph_messaging.delivery import streams
    from supergraph_messaging.models import OutboxEvent

    stream = streams.keys("orders.paid")[0]
    for n in range(5):
        redis_publish("orders.paid", {"n": n}, durable=True)
    redis_conn.xgroup_create(stream, "billing.handlers.on_paid", id="0")
    redis_conn.xreadgroup("billing.handlers.on_paid", "w1", {stream: ">"}, count=2)  # 2 pending, 3 behind
    redis_conn.xadd(stream + ":dead", {"o": "x", "d": "{}", "reason": "RuntimeError"})
    with override_settings(SUPERGRAPH_MESSAGING={"DELIVERY": "durable", "SERVICE_NAME": "t"}):
        publish_event("orders.paid", {"n": 99})  # committed, not relayed: the outbox backlog
    staff = client_for(user("ops", "view_cachekey"))
    page = staff.get(BASE + "streams/").content.decode()
    (row,) = [r for r in re.findall(r"<tr>(.*?)</tr>", page, re.S) if "<code>orders.paid</code>" in r]
    cells = [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
    # channel, length, offset, epoch, group, consumers, lag, pending, last delivered, dead letters
    assert cells[:3] == ["orders.paid", "5", "5"] and cells[4:8] == ["billing.handlers.on_paid", "1", "3", "2"]
    assert cells[8] == "2-0" and cells[9] == "1"
    assert "1 unrelayed" in page and OutboxEvent.objects.count() == 1
    # The outbox is listed read-only; a user without the cache permission sees no streams.
    assert staff.get("/admin/supergraph_messaging/outboxevent/").status_code == 403
    outbox_viewer = client_for(user("auditor", "view_outboxevent"))
    listing = outbox_viewer.get("/admin/supergraph_messaging/outboxevent/?relayed=no")
    assert listing.status_code == 200 and "orders.paid" in listing.content.decode()
    assert "Unrelayed: 1" in listing.content.decode()
    assert outbox_viewer.get(BASE + "streams/").status_code == 403
    assert client_for(user("nostaff", "view_cachekey", staff=False)).get(BASE + "streams/").status_code == 302
