"""Dead letters with a real messaging_listen worker: replayed once after the fix, discarded, logged."""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.admin.models import CHANGE, DELETION, LogEntry
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client, override_settings

from supergraph_messaging import publish_event
from supergraph_messaging.delivery import streams
from supergraph_messaging.events import flush_events
from tests.conftest import wait_for
from tests.delivery.test_groups import Worker
from tests.testapp.models import CameraModel

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
DURABLE = {"DELIVERY": "durable", "SERVICE_NAME": "tests"}
CHANNEL = "testapp.poison"
DEAD = streams.keys(CHANNEL)[0] + ":dead"
BROKEN = "testapp:poison:broken"
ADMIN = "/admin/supergraph_messaging/deadletter/"


@pytest.fixture
def worker(redis_conn: Any) -> Iterator[Worker]:
    with override_settings(SUPERGRAPH_MESSAGING=DURABLE):
        Worker(redis_conn).stop()  # the service's groups exist from its first start on
        redis_conn.set(BROKEN, 1)  # the handler has its bug
        running = Worker(redis_conn)
        try:
            yield running
        finally:
            running.stop()


def poison(redis_conn: Any, order: int) -> str:
    """Publish an event the broken handler fails on; its dead letter's id once it is dead-lettered."""
    before = redis_conn.xlen(DEAD)
    publish_event(CHANNEL, {"id": order})
    flush_events()
    wait_for(lambda: redis_conn.xlen(DEAD) == before + 1, timeout=30)  # MAX_DELIVERIES attempts first
    return str(redis_conn.xrange(DEAD)[-1][0].decode())


def deadletters(*args: str) -> str:
    out = io.StringIO()
    call_command("messaging_deadletters", *args, stdout=out, stderr=out)
    return out.getvalue()


def rows(order: int) -> int:
    return CameraModel.objects.filter(name=f"poison-{order}").count()


def test_replay_after_the_fix_runs_the_event_once_and_discard_removes_one(redis_conn: Any, worker: Worker,
                                                                          caplog: Any) -> None:
    letter = poison(redis_conn, 1)
    listing = deadletters("list")
    assert letter in listing and "tests.tests.testapp.subscribers.poison" in listing and "RuntimeError" in listing
    assert "the handler's bug" in deadletters("show", letter)
    assert "Would replay" in deadletters("replay", "--channel", CHANNEL, "--dry-run")
    assert redis_conn.xlen(DEAD) == 1 and rows(1) == 0  # a dry run changes nothing
    redis_conn.delete(BROKEN)  # the handler is fixed
    assert "Replayed 1 of 1" in deadletters("replay", "--channel", CHANNEL)
    wait_for(lambda: rows(1) == 1, timeout=10)  # within a second: the worker reads its own pending when idle
    time.sleep(1.5)  # room for a second run, had the entry reached the group twice
    assert rows(1) == 1 and redis_conn.xlen(DEAD) == 0
    with pytest.raises(CommandError, match="No dead letter"):
        deadletters("replay", letter)  # gone: replayed once, never twice
    with pytest.raises(CommandError, match="Name the dead letters"):
        deadletters("discard")  # a bulk action is never the default

    redis_conn.set(BROKEN, 1)
    letter = poison(redis_conn, 2)
    assert "Discarded 1 of 1" in deadletters("discard", letter)
    time.sleep(1.5)
    assert redis_conn.xlen(DEAD) == 0 and rows(2) == 0
    logged = [r.getMessage() for r in caplog.records if r.name == "supergraph_messaging.deadletters"]
    assert any(m.startswith("Replayed dead letter") and "by manage.py messaging_deadletters" in m for m in logged)
    assert any(m.startswith(f"Discarded dead letter {letter}") for m in logged)
    print(f"\na poison event dead-lettered, the handler fixed, replayed: its effect happened {rows(1)} time(s)")


def staff(name: str, *perms: str) -> Client:
    user = User.objects.create_user(name, password="pw", is_staff=True)
    for codename in perms:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def act(client: Client, action: str, letters: list[str], csrf: bool = True) -> Any:
    page = client.get(ADMIN).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    values = [v.replace("&quot;", '"') for v in re.findall(r'name="letters" value="([^"]+)"', page)]
    chosen = [v for v in values if any(f'"{letter}"' in v for letter in letters)]
    data = {"action": action, "letters": chosen, **({"csrfmiddlewaretoken": token[1]} if csrf and token else {})}
    return client.post(ADMIN + "act/", data)


def test_the_admin_replays_and_discards_with_permission_and_csrf_and_logs_it(redis_conn: Any,
                                                                             worker: Worker) -> None:
    letter = poison(redis_conn, 3)
    viewer = staff("viewer", "view_deadletter")
    page = viewer.get(ADMIN).content.decode()
    assert letter in page and "Replay selected" not in page  # seeing is not replaying
    assert act(viewer, "replay", [letter]).status_code == 403
    operator = staff("operator", "view_deadletter", "change_deadletter", "delete_deadletter")
    assert act(operator, "replay", [letter], csrf=False).status_code == 403  # CSRF-checked
    assert redis_conn.xlen(DEAD) == 1
    redis_conn.delete(BROKEN)
    assert act(operator, "replay", [letter]).status_code == 302
    wait_for(lambda: rows(3) == 1, timeout=10)
    time.sleep(1.5)
    assert rows(3) == 1 and redis_conn.xlen(DEAD) == 0
    (entry,) = LogEntry.objects.filter(action_flag=CHANGE)
    assert entry.user.username == "operator" and "Replayed dead letter" in entry.change_message

    redis_conn.set(BROKEN, 1)
    letter = poison(redis_conn, 4)
    assert act(operator, "discard", [letter]).status_code == 302
    assert redis_conn.xlen(DEAD) == 0 and rows(4) == 0
    assert LogEntry.objects.filter(action_flag=DELETION, change_message__startswith="Discarded").count() == 1
    assert Client().get(ADMIN).status_code == 302  # anonymous: to the login page
