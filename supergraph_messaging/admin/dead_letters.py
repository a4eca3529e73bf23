"""The admin's dead letters: every channel's, with replay and discard as CSRF-checked POST actions.

Seeing them needs ``view_deadletter``, replaying ``change_deadletter``,
discarding ``delete_deadletter`` (the unmanaged ``DeadLetter`` model). Each
action is written to the admin log and to the ``supergraph_messaging.deadletters``
logger, with the user. What replay does: :mod:`supergraph_messaging.operations.dead_letters`.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.models import CHANGE, DELETION, LogEntry
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.views.decorators.http import require_POST

from supergraph_messaging.models import DeadLetter
from supergraph_messaging.operations import dead_letters
from supergraph_messaging.operations.dead_letters import DeadLetterError
from supergraph_messaging.redis.client import get_redis_client
from supergraph_messaging.redis.errors import REDIS_ERRORS

TEMPLATE = "admin/supergraph_messaging/dead_letters.html"
#: Letters shown on the page (over every channel); the command lists more.
PAGE_LIMIT = 200


def token(letter: dead_letters.DeadLetter) -> str:
    """A letter's checkbox value: its channel and id (a channel name may hold any character)."""
    return json.dumps([letter.channel, letter.id])


def _parse(raw: str) -> tuple[str, str] | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) and len(v) <= 1024 for v in value):
        return value[0], value[1]
    return None


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        name = "supergraph_messaging_deadletter"
        wrap = self.admin_site.admin_view
        return [
            path("", wrap(self.changelist_view), name=f"{name}_changelist"),
            path("act/", wrap(require_POST(self.act_view)), name=f"{name}_act"),
        ]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        rows: list[tuple[str, dead_letters.DeadLetter]] = []
        try:
            conn = get_redis_client().redis
            rows = [(token(x), x) for x in dead_letters.select(conn, everything=True, limit=PAGE_LIMIT)]
        except REDIS_ERRORS as exc:
            messages.error(request, f"Redis at {get_redis_client().masked_url} is unreachable: {exc}")
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Dead letters",
            "rows": rows,
            "limit": PAGE_LIMIT,
            "can_replay": self.has_change_permission(request),
            "can_discard": self.has_delete_permission(request),
            "changelist_url": reverse("admin:supergraph_messaging_cachekey_changelist"),
        }
        return TemplateResponse(request, TEMPLATE, context)

    def act_view(self, request: HttpRequest) -> HttpResponse:
        action = request.POST.get("action")
        allowed = {"replay": self.has_change_permission, "discard": self.has_delete_permission}.get(action or "")
        if allowed is None or not allowed(request):
            raise PermissionDenied
        back = HttpResponseRedirect(reverse("admin:supergraph_messaging_deadletter_changelist"))
        chosen = [p for p in (_parse(raw) for raw in request.POST.getlist("letters")[:PAGE_LIMIT]) if p is not None]
        if not chosen:
            messages.warning(request, "No dead letters were selected.")
            return back
        group = request.POST.get("group", "").strip()[:300] or None
        by = f"admin user {request.user.get_username()}"
        done = 0
        try:
            conn = get_redis_client().redis
            for channel, letter_id in chosen:
                letter = dead_letters.get(conn, channel, letter_id)
                if letter is None:
                    messages.warning(request, f"Dead letter {letter_id} of {channel!r} is gone already.")
                    continue
                try:
                    if action == "replay":
                        consumer = dead_letters.replay(conn, letter, group, by=by)
                        note = f"Replayed dead letter {letter.id} of {channel!r} (event {letter.event_id}) to " \
                               f"consumer {consumer} of group {group or letter.group}."
                    elif dead_letters.discard(conn, letter, by=by):
                        note = f"Discarded dead letter {letter.id} of {channel!r} (event {letter.event_id})."
                    else:
                        messages.warning(request, f"Dead letter {letter_id} of {channel!r} is gone already.")
                        continue
                except DeadLetterError as exc:
                    messages.error(request, str(exc))
                    continue
                LogEntry.objects.log_actions(user_id=request.user.pk or 0,
                                             queryset=[DeadLetter(id=f"{channel} {letter.id}"[:1024])],
                                             action_flag=CHANGE if action == "replay" else DELETION,
                                             change_message=note)
                done += 1
        except REDIS_ERRORS as exc:
            messages.error(request, f"Redis at {get_redis_client().masked_url} is unreachable: {exc}")
        verb = "Replayed" if action == "replay" else "Discarded"
        messages.success(request, f"{verb} {done} of {len(chosen)} selected dead letter(s).")
        return back
