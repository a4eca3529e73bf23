"""/__asyncapi: an AsyncAPI 3.0 document the official parser accepts, listing everything the project runs."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client, override_settings

from supergraph_messaging.cache import invalidation
from supergraph_messaging.delivery.subscriber import get_global_subscriber
from supergraph_messaging.events import config
from supergraph_messaging.realtime.subscriptions import registry as subscriptions

pytestmark = pytest.mark.django_db
CHECKER = Path(__file__).resolve().parent.parent / "asyncapi"
TOKEN = "t" * 40


@pytest.fixture(scope="session")
def node() -> str:
    """Node with @asyncapi/parser installed from the lock file (``make test`` does it; this is the fallback)."""
    node = shutil.which("node")
    assert node, "Node.js is needed to run the official AsyncAPI parser: apt-get install nodejs npm"
    if not (CHECKER / "node_modules" / "@asyncapi" / "parser").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=CHECKER, check=True, timeout=300,
                       capture_output=True)
    return node


def parse(node: str, document: dict[str, Any]) -> dict[str, Any]:
    out = subprocess.run([node, str(CHECKER / "validate.mjs")], input=json.dumps(document), text=True,
                         capture_output=True, timeout=60, check=True)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def staff_client() -> Client:
    from django.contrib.auth.models import User

    client = Client()
    client.force_login(User.objects.create_user("staff", password="pw", is_staff=True))
    return client


def test_document_validates_and_lists_everything(node: str) -> None:
    from tests.testapp import caching  # noqa: F401 - registers its templates

    response = staff_client().get("/__asyncapi")
    assert response.status_code == 200
    document = response.json()
    result = parse(node, document)
    assert result["errors"] == [], result["errors"]
    assert result["warnings"] == [], result["warnings"]
    addresses, operations = set(result["channels"]), set(result["operations"])
    published = {address for r in config.registry for address in r.config.publish.values()}
    consumed = {c for c, names in get_global_subscriber().handler_names().items()
                if any(not n.startswith("supergraph_messaging.") for n in names)}
    invalidating = {c for r in invalidation.templates for c in r.channels}
    assert published and consumed and invalidating and subscriptions
    assert published | consumed | invalidating | {"/subscribe"} == addresses
    for r in config.registry:
        for action, address in r.config.publish.items():
            assert f"publish.{address}.{r.entity}.{action}" in operations
    assert {f"consume.{c}" for c in consumed} <= operations
    assert {f"invalidate.{c}" for c in invalidating} <= operations
    assert {f"subscribe.{s.entity}" for s in subscriptions} | {f"next.{s.entity}" for s in subscriptions} <= operations
    # The payload is the serializer's fields, restricted to payload_fields, plus _meta.
    created = document["components"]["messages"]["camera.created.testapp.Camera.create"]["payload"]["properties"]
    assert set(created) == {"id", "mac_address", "model", "settings", "_meta", "_position"}
    assert created["id"] == {"type": "integer"}
    filters = document["components"]["messages"]["CameraEvents.subscribe"]["payload"]["properties"]["payload"]
    assert filters["properties"]["filters"]["properties"]["complex_id__in"]["type"] == "array"
    assert "tests.testapp" not in response.content.decode()  # no module paths


def test_the_parser_does_reject_a_broken_document(node: str) -> None:
    """The check above can fail: an operation naming a message its channel does not have is an error."""
    document = copy.deepcopy(staff_client().get("/__asyncapi").json())
    channel = document["channels"]["subscribe"]
    channel["messages"].pop(next(iter(channel["messages"])))
    assert parse(node, document)["errors"]


def test_management_command_prints_the_same_document() -> None:
    out = StringIO()
    call_command("messaging_asyncapi", "--host", "testserver", stdout=out)
    assert json.loads(out.getvalue()) == staff_client().get("/__asyncapi").json()


@pytest.mark.parametrize("path", ["/__schema", "/__asyncapi"])
def test_access_follows_schema_access(path: str) -> None:
    service = {"HTTP_AUTHORIZATION": f"Service {TOKEN}"}
    with override_settings(SUPERGRAPH_MESSAGING={"SERVICE_TOKEN": TOKEN}):  # default: staff
        anonymous = Client().get(path)
        assert anonymous.status_code == 403 and "SCHEMA_ACCESS" in anonymous.json()["detail"]
        assert staff_client().get(path).status_code == 200
        assert Client().get(path, **service).status_code == 200
        assert Client().get(path, HTTP_AUTHORIZATION=f"Service {'x' * 40}").status_code == 403
        assert Client().get(path, HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 403
    with override_settings(SUPERGRAPH_MESSAGING={"SERVICE_TOKEN": TOKEN, "SCHEMA_ACCESS": "token"}):
        assert Client().get(path, **service).status_code == 200
        from django.contrib.auth.models import User

        User.objects.filter(username="staff").delete()
        assert staff_client().get(path).status_code == 403
    with override_settings(SUPERGRAPH_MESSAGING={"SCHEMA_ACCESS": "public"}):
        assert Client().get(path).status_code == 200
    with override_settings(SUPERGRAPH_MESSAGING={"SCHEMA_ACCESS": "token"}):  # no token set: nobody
        assert Client().get(path, HTTP_AUTHORIZATION="Service ").status_code == 403
