"""The "Supergraph messaging" admin: browse and invalidate the cache, see channels and registries.

The cache browser is the changelist of the unmanaged ``CacheKey`` model, so
Django's permissions govern it: browsing needs ``view_cachekey``, deleting
and invalidating need ``delete_cachekey``. Every change is a CSRF-checked
POST, reported with a count and written to the admin log.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.models import DELETION, LogEntry
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_POST

from supergraph_messaging.admin import dead_letters as dead_letters  # registers DeadLetterAdmin
from supergraph_messaging.admin import health, keyspace
from supergraph_messaging.cache import invalidation, stats
from supergraph_messaging.conf import conf
from supergraph_messaging.delivery import outbox
from supergraph_messaging.delivery.subscriber import get_global_subscriber
from supergraph_messaging.events import config
from supergraph_messaging.models import CacheKey, OutboxEvent
from supergraph_messaging.operations import streams
from supergraph_messaging.realtime.subscriptions import describe
from supergraph_messaging.redis import cluster
from supergraph_messaging.redis.client import get_redis_client
from supergraph_messaging.redis.errors import REDIS_ERRORS
from supergraph_messaging.redis.keys import LEASE_SUFFIX, VERSION_SUFFIX, escape_glob

COUNT_LIMIT = 10_000


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")
TEMPLATE_DIR = "admin/supergraph_messaging/"


@admin.register(CacheKey)
class CacheKeyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        name = "supergraph_messaging_cachekey"
        wrap = self.admin_site.admin_view
        return [
            path("", wrap(self.changelist_view), name=f"{name}_changelist"),
            path("key/", wrap(self.key_view), name=f"{name}_key"),
            path("delete/", wrap(require_POST(self.delete_keys_view)), name=f"{name}_delete"),
            path("invalidate/", wrap(self.invalidate_view), name=f"{name}_invalidate"),
            path("channels/", wrap(self.channels_view), name=f"{name}_channels"),
            path("templates/", wrap(self.templates_view), name=f"{name}_templates"),
            path("streams/", wrap(self.streams_view), name=f"{name}_streams"),
            path("health/", wrap(self.health_view), name=f"{name}_health"),
        ]

    # -- helpers ------------------------------------------------------------
    def _require(self, request: HttpRequest, delete: bool = False) -> None:
        if not self.has_view_permission(request) or (delete and not self.has_delete_permission(request)):
            raise PermissionDenied

    def _context(self, request: HttpRequest, title: str, **extra: Any) -> dict[str, Any]:
        return {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": title,
            "can_delete": self.has_delete_permission(request),
            "changelist_url": reverse("admin:supergraph_messaging_cachekey_changelist"),
            **extra,
        }

    def _log(self, request: HttpRequest, keys: list[str], message: str) -> None:
        LogEntry.objects.log_actions(
            user_id=request.user.pk or 0,
            queryset=[CacheKey(key=k[:1024]) for k in keys],
            action_flag=DELETION,
            change_message=message,
        )

    def _namespace(self, request: HttpRequest) -> keyspace.Namespace:
        """What this request may see: the app's keys; every key (never sessions) for a superuser who asks."""
        asked = (request.POST if request.method == "POST" else request.GET).get("all") == "1"
        return keyspace.Namespace(everything=asked and bool(getattr(request.user, "is_superuser", False)))

    def _redis_error(self, request: HttpRequest, exc: BaseException) -> None:
        messages.error(request, f"Redis at {get_redis_client().masked_url} is unreachable: {exc}")

    # -- views --------------------------------------------------------------
    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        self._require(request)
        pattern = request.GET.get("q", "").strip() or "*"
        cursor = request.GET.get("cursor", "0")[:300]  # a number, or host:port/number on a Cluster
        rows: list[keyspace.KeyInfo] = []
        next_cursor = "0"
        namespace = self._namespace(request)
        try:
            keys, next_cursor = keyspace.scan_page(pattern, cursor, namespace=namespace)
            rows = keyspace.describe(keys)
        except REDIS_ERRORS as exc:
            self._redis_error(request, exc)
        everything = "1" if namespace.everything else ""
        next_url = None
        if next_cursor != "0":
            next_url = "?" + urlencode({"q": pattern, "cursor": next_cursor, "all": everything})
        context = self._context(request, "Cache keys", rows=rows, q=pattern, next_url=next_url,
                                first_page=cursor in ("", "0"), everything=everything,
                                can_see_everything=bool(getattr(request.user, "is_superuser", False)))
        return TemplateResponse(request, TEMPLATE_DIR + "cachekey_changelist.html", context)

    def key_view(self, request: HttpRequest) -> HttpResponse:
        self._require(request)
        token = request.GET.get("key", "")
        raw = keyspace.token_key(token)
        if not self._namespace(request).allows(raw):
            raise PermissionDenied("This key is outside the app's namespace.")
        key = keyspace.describe([raw])[0].key if raw else ""
        try:
            value = keyspace.read_value(raw)
        except REDIS_ERRORS as exc:
            self._redis_error(request, exc)
            return HttpResponseRedirect(reverse("admin:supergraph_messaging_cachekey_changelist"))
        return TemplateResponse(request, TEMPLATE_DIR + "cachekey_detail.html",
                                self._context(request, f"Cache key {key}", key=key, token=token, value=value,
                                              everything=request.GET.get("all", "")))

    def delete_keys_view(self, request: HttpRequest) -> HttpResponse:
        self._require(request, delete=True)
        namespace = self._namespace(request)
        selected = [keyspace.token_key(t) for t in request.POST.getlist("keys") if t]
        keys = [k for k in selected if namespace.allows(k)]
        back = reverse("admin:supergraph_messaging_cachekey_changelist") + "?" + urlencode(
            {"q": request.POST.get("q", "*"), "all": "1" if namespace.everything else ""})
        if len(keys) < len(selected):
            messages.error(request, f"{len(selected) - len(keys)} selected key(s) are outside the app's namespace "
                           "and were left alone.")
        if not keys:
            if not selected:
                messages.warning(request, "No keys were selected.")
            return HttpResponseRedirect(back)
        try:
            client = get_redis_client()
            if client.cluster:
                deleted = cluster.invalidate(client.redis, [k.decode(errors="surrogateescape") for k in keys])
            else:
                deleted = int(client.redis.unlink(*keys))
                client.redis.unlink(*[k + suffix.encode() for k in keys for suffix in (LEASE_SUFFIX, VERSION_SUFFIX)])
        except REDIS_ERRORS as exc:
            self._redis_error(request, exc)
            return HttpResponseRedirect(back)
        names = [info.key for info in keyspace.describe(keys)] if deleted < len(keys) else [_text(k) for k in keys]
        self._log(request, names, f"Deleted cache key ({deleted} of {len(keys)} selected existed).")
        messages.success(request, f"Deleted {deleted} of {len(keys)} selected keys.")
        return HttpResponseRedirect(back)

    def invalidate_view(self, request: HttpRequest) -> HttpResponse:
        self._require(request, delete=request.method == "POST")
        if request.method != "POST":
            pattern = request.GET.get("pattern", request.GET.get("q", ""))
            return TemplateResponse(request, TEMPLATE_DIR + "invalidate.html",
                                    self._context(request, "Invalidate a pattern", pattern=pattern, step="form"))
        pattern = request.POST.get("pattern", "").strip()
        effective = pattern or "*"
        retype_needed = effective == "*"
        namespace = self._namespace(request)
        if request.POST.get("confirm") != "yes":
            try:
                count, exact, sample = keyspace.count_matching(effective, COUNT_LIMIT, namespace=namespace)
            except REDIS_ERRORS as exc:
                self._redis_error(request, exc)
                return HttpResponseRedirect(reverse("admin:supergraph_messaging_cachekey_changelist"))
            return TemplateResponse(request, TEMPLATE_DIR + "invalidate.html", self._context(
                request, "Confirm invalidation", pattern=pattern, effective=effective, step="confirm",
                count=count, exact=exact, sample=sample, retype_needed=retype_needed,
                everything="1" if namespace.everything else ""))
        if retype_needed and request.POST.get("retype", "").strip() != "*":
            messages.error(request, "To invalidate every key, type * in the confirmation box.")
            return TemplateResponse(request, TEMPLATE_DIR + "invalidate.html", self._context(
                request, "Confirm invalidation", pattern=pattern, effective=effective, step="confirm",
                count=None, exact=False, sample=[], retype_needed=True), status=400)
        try:
            deleted, skipped = keyspace.unlink_allowed(effective, namespace)
        except REDIS_ERRORS as exc:
            self._redis_error(request, exc)
            return HttpResponseRedirect(reverse("admin:supergraph_messaging_cachekey_changelist"))
        self._log(request, [f"pattern:{effective}"], f"Invalidated pattern {effective!r}: {deleted} keys.")
        messages.success(request, f"Invalidated {deleted} keys matching {effective!r}.")
        if skipped:
            messages.warning(request, f"{skipped} matching key(s) outside the app's namespace were left alone.")
        return HttpResponseRedirect(reverse("admin:supergraph_messaging_cachekey_changelist"))

    def channels_view(self, request: HttpRequest) -> HttpResponse:
        self._require(request)
        channels: list[tuple[str, int]] = []
        numpat = 0
        try:
            channels, numpat = keyspace.pubsub_channels()
        except REDIS_ERRORS as exc:
            self._redis_error(request, exc)
        published = [
            {"channel": channel, "action": action, "entity": r.entity, "source": r.source,
             "fields": ", ".join(r.config.payload_fields or []) or "(serializer fields)"}
            for r in config.registry for action, channel in r.config.publish.items()
        ]
        context = self._context(request, "Pub/Sub channels", channels=channels, numpat=numpat,
                                handlers=sorted(get_global_subscriber().channels), published=published,
                                subscriptions=describe())
        return TemplateResponse(request, TEMPLATE_DIR + "channels.html", context)

    def templates_view(self, request: HttpRequest) -> HttpResponse:
        self._require(request)
        try:
            totals = stats.read()
        except REDIS_ERRORS as exc:
            self._redis_error(request, exc)
            totals = {}
        rows = []
        for r in invalidation.templates:
            name = r.template.template
            rows.append({"template": name, "kind": r.kind, "source": r.source, "channels": ", ".join(r.channels),
                         "stats": totals.get(name, dict.fromkeys(stats.FIELDS, 0)),
                         "pattern": escape_glob(conf.key_prefix) + r.template.pattern()})
        return TemplateResponse(request, TEMPLATE_DIR + "templates.html",
                                self._context(request, "Cache templates", rows=rows))

    def streams_view(self, request: HttpRequest) -> HttpResponse:
        """Durable delivery at a glance: each stream's length and position, its groups' lag and pending
        entries, its dead letters, and the outbox backlog."""
        self._require(request)
        rows: list[streams.StreamInfo] = []
        try:
            conn = get_redis_client().redis
            rows = streams.describe(conn, streams.stream_keys(conn))
        except REDIS_ERRORS as exc:
            self._redis_error(request, exc)
        backlog, oldest = outbox.backlog()
        context = self._context(request, "Streams", rows=rows, durable=conf.durable, backlog=backlog,
                                oldest=oldest, limit=streams.STREAM_LIMIT,
                                outbox_url=reverse("admin:supergraph_messaging_outboxevent_changelist"))
        return TemplateResponse(request, TEMPLATE_DIR + "streams.html", context)

    def health_view(self, request: HttpRequest) -> HttpResponse:
        """The last hour of the numbers /metrics shows, as charts (admin/health.py)."""
        self._require(request)
        return health.health_view(self._context(request, "Messaging health"), request)


class RelayedFilter(admin.SimpleListFilter):
    title = "relayed"
    parameter_name = "relayed"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("no", "Not yet"), ("yes", "Yes")]

    def queryset(self, request: HttpRequest, queryset: Any) -> Any:
        if self.value() in ("no", "yes"):
            return queryset.filter(relayed_at__isnull=self.value() == "no")
        return queryset


@admin.register(OutboxEvent)
class OutboxEventAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """The outbox, read-only: a row is the record that an event committed; editing or deleting one by
    hand would publish something that did not happen, or lose something that did."""

    list_display = ("id", "channel", "event_id", "created_at", "relayed_at")
    list_filter = (RelayedFilter, "channel")
    search_fields = ("=event_id", "channel")
    ordering = ("-id",)
    show_full_result_count = False  # a large outbox: no COUNT(*) of the whole table per page

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        backlog, oldest = outbox.backlog()
        summary = f"Unrelayed: {backlog}" + ("" if oldest is None else f"; the oldest waits {oldest:.1f} s")
        return super().changelist_view(request, {**(extra_context or {}), "title": f"Outbox events ({summary})"})
