"""The admin in a real headless Chromium against a live server; Redis checked after each step."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import User

from tests.support.browser import browser_page, shot  # noqa: F401 - fixture

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]



def test_admin_in_a_browser(live_server: Any, browser_page: Any, redis_conn: Any) -> None:  # noqa: F811
    from supergraph_messaging.cache import stats

    page = browser_page
    stats.flush()  # nothing pending: the stats hash must not join the listed keys
    redis_conn.delete(stats.STATS_KEY)
    User.objects.create_superuser("admin", "a@example.com", "pw")
    redis_conn.set("camera:mac:AA", json.dumps({"id": 1, "model": "Hikvision", "settings": {"fps": 25}}), ex=3600)
    redis_conn.set("camera:mac:BB", json.dumps({"id": 2, "model": "Dahua"}))
    redis_conn.set("camera:mac:CC", json.dumps({"id": 3}))
    redis_conn.set("user:1", json.dumps({"name": "ann"}))
    long_key = "camera:mac:" + "L" * 300
    redis_conn.set(long_key, json.dumps({"blob": "x" * 2000}))

    page.goto(f"{live_server.url}/admin/login/?next=/admin/supergraph_messaging/cachekey/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "pw")
    page.click("input[type=submit]")
    page.wait_for_selector("#result_list")
    shot(page, "admin-01-keys")
    assert page.locator("a.key-link").count() == 5
    # Long keys and values wrap inside the table: the page never scrolls sideways at 1280 px.
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    assert "REDIS MEMORY (BYTES)" in page.inner_text("#result_list thead").upper()
    assert page.inner_text(".breadcrumbs").count("Cache keys") == 1
    redis_conn.delete(long_key)

    page.fill("#q", "camera:*")
    page.click("#search input[type=submit]")
    page.wait_for_url("**q=camera*")
    assert page.locator("a.key-link").count() == 3
    shot(page, "admin-02-search")

    page.click("a.key-link:has-text('camera:mac:AA')")
    page.wait_for_selector("#key-value")
    assert '"model": "Hikvision"' in page.inner_text("#key-value")
    shot(page, "admin-03-key")

    page.click("#delete-key")
    page.wait_for_selector(".messagelist")
    assert "Deleted 1 of 1" in page.inner_text(".messagelist")
    assert not redis_conn.exists("camera:mac:AA")
    shot(page, "admin-04-deleted")

    page.goto(f"{live_server.url}/admin/supergraph_messaging/cachekey/invalidate/?pattern=camera:*")
    page.click("#preview")
    page.wait_for_selector("#match-count")
    assert "2 keys match" in page.inner_text("#match-count")
    assert redis_conn.exists("camera:mac:BB", "camera:mac:CC") == 2
    shot(page, "admin-05-confirm")
    page.click("#confirm")
    page.wait_for_selector(".messagelist")
    assert "Invalidated 2 keys" in page.inner_text(".messagelist")
    assert redis_conn.exists("camera:mac:BB", "camera:mac:CC") == 0
    assert redis_conn.exists("user:1")
    shot(page, "admin-06-invalidated")

    page.goto(f"{live_server.url}/admin/supergraph_messaging/cachekey/channels/")
    page.wait_for_selector("#channels")
    shot(page, "admin-07-channels")
    page.goto(f"{live_server.url}/admin/supergraph_messaging/cachekey/templates/")
    page.wait_for_selector("#templates")
    shot(page, "admin-08-templates")
