from __future__ import annotations

from django.test import override_settings

from supergraph_messaging.checks import check_settings

REDIS = {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": "redis://127.0.0.1:1/0"}


def ids(**overrides: object) -> list[str]:
    with override_settings(**overrides):
        return [m.id for m in check_settings()]


def test_valid_settings_pass() -> None:
    assert ids() == []


def test_not_a_dict() -> None:
    assert ids(SUPERGRAPH_MESSAGING=["x"]) == ["supergraph_messaging.E001"]


def test_unknown_key_is_reported_by_name() -> None:
    with override_settings(SUPERGRAPH_MESSAGING={"DEFAULT_TTL": 5, "KEY_PERFIX": "x"}):
        (msg,) = check_settings()
    assert msg.id == "supergraph_messaging.E002" and "KEY_PERFIX" in msg.msg


def test_cache_alias_missing() -> None:
    assert "supergraph_messaging.E003" in ids(SUPERGRAPH_MESSAGING={"CACHE_ALIAS": "nope"})


def test_cache_alias_not_django_redis() -> None:
    caches = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    assert "supergraph_messaging.E004" in ids(CACHES=caches)


def test_no_url_at_all(monkeypatch: object) -> None:
    import os

    caches = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    saved = os.environ.pop("REDIS_URL", None)
    try:
        assert "supergraph_messaging.E005" in ids(CACHES=caches)
    finally:
        if saved is not None:
            os.environ["REDIS_URL"] = saved


def test_unparseable_url() -> None:
    for bad in ("http://x", "redis://host:notaport/0", "not a url"):
        assert "supergraph_messaging.E006" in ids(SUPERGRAPH_MESSAGING={"REDIS_URL": bad}), bad


def test_bad_ttl() -> None:
    assert ids(SUPERGRAPH_MESSAGING={"DEFAULT_TTL": -1}) == ["supergraph_messaging.E007"]
    assert ids(SUPERGRAPH_MESSAGING={"DEFAULT_TTL": None}) == []


def test_bad_prefix_type() -> None:
    assert ids(SUPERGRAPH_MESSAGING={"KEY_PREFIX": 3}) == ["supergraph_messaging.E008"]


def test_glob_in_key_prefix_warns() -> None:
    assert ids(SUPERGRAPH_MESSAGING={"KEY_PREFIX": "a*"}) == ["supergraph_messaging.W001"]


def test_settings_are_read_live() -> None:
    from supergraph_messaging.conf import conf

    assert conf.default_ttl == 3600
    with override_settings(SUPERGRAPH_MESSAGING={"DEFAULT_TTL": 7, "KEY_PREFIX": "p:"}):
        assert conf.default_ttl == 7 and conf.key_prefix == "p:"
    assert conf.key_prefix == ""


def test_import_is_lazy() -> None:
    import subprocess
    import sys

    code = (
        "import sys, supergraph_messaging;"
        "bad=[m for m in ('rest_framework','channels','django.db.models') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_manage_check_passes_and_runs_viewset_checks() -> None:
    from django.core.management import call_command

    from supergraph_messaging.checks import check_event_viewsets

    call_command("check")
    assert check_event_viewsets() == []
