"""The admin in a real headless Chromium against a live server; Redis checked after each step."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import User

from tests.support.browser import browser_page, shot  # noqa: F401 - fixture

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]



def log_in(page: Any, live_server: Any, then: str, selector: str) -> None:
    """As the superuser "admin" (password "pw"), then on to ``then`` until ``selector`` shows."""
    page.goto(f"{live_server.url}/admin/login/?next={then}")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "pw")
    page.click("input[type=submit]")
    page.wait_for_selector(selector)


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

    log_in(page, live_server, "/admin/supergraph_messaging/cachekey/", "#result_list")
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


def test_the_health_page_draws_the_last_hour_as_charts(live_server: Any, browser_page: Any,  # noqa: F811
                                                       redis_conn: Any) -> None:
    """What /metrics shows, sampled by the process's exporter (here every 0.5 s instead of 10, so that the
    test does not wait minutes), drawn as inline SVG: events per channel and the cache's hit ratio."""
    import time

    from django.test import override_settings

    from supergraph_messaging import publish_event
    from supergraph_messaging.operations import history, metrics
    from tests.conftest import wait_for
    from tests.testapp import caching

    User.objects.create_superuser("admin", "a@example.com", "pw")
    with override_settings(SUPERGRAPH_MESSAGING={"HEALTH_SAMPLE_INTERVAL": 0.5}):
        metrics.start()
        redis_conn.delete(history.redis_key(history.SAMPLES_KEY))
        for n in range(6):  # six seconds of traffic: events and cache reads
            publish_event("health.demo", {"n": n})
            for _ in range(3):
                caching.camera_by_mac("HEALTH")
            time.sleep(1.0)
        wait_for(lambda: len(history.samples()) >= 4, timeout=10)
        page = browser_page
        log_in(page, live_server, "/admin/supergraph_messaging/cachekey/health/", "#health-summary")
        shot(page, "admin-health")
    drawn = page.evaluate("""() => [...document.querySelectorAll('.health-chart')].map(c => ({
        label: c.querySelector('.label').textContent,
        points: [...c.querySelectorAll('polyline')].map(p => p.getAttribute('points').split(' ').length)
                  .reduce((a, b) => a + b, 0) + c.querySelectorAll('circle').length}))""")
    by_label = {d["label"]: d["points"] for d in drawn}
    assert by_label.get("health.demo", 0) >= 3, drawn  # the event rate, point after point
    assert by_label.get("camera:mac:{mac_address}", 0) >= 1, drawn  # the hit ratio
    assert by_label.get("open", 0) >= 3, drawn  # WebSocket connections (0 here), drawn all the same
