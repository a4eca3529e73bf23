"""docs/installation.md, built from its code blocks and run as a new user would run it.

`django-admin startproject mysite` and `startapp shop` make the project; every
Python block headed by a path becomes that file (the settings block is added at
the end of the generated settings). Then `runserver` (daphne) and
`messaging_listen` run as processes against a Redis of their own, and the three
patterns are checked end to end: a cached lookup returns the right product for
each SKU, whether CacheSync or the HTTP fallback wrote it; the documented
subscribe frames receive exactly the price changes their filters describe; the
handler writes one PriceLog row per change.

"Nothing outside the install line" is checked twice: the blocks import only the
standard library, the project and distributions that `pip install` of the
documented line pulls in (read from the installed metadata), and every process
of the project runs with the other installed distributions hidden
(tests/support/install_line/sitecustomize.py), as in a virtualenv holding only
that line.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import re
import shlex
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import ROOT
from tests.support.redis_server import RedisServer, free_port

DOC = ROOT / "docs" / "installation.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
HEADER = re.compile(r"# (?P<path>[\w/]+\.py)(?P<append> \(added at the end\))?")
DOCUMENTED_REDIS = "redis://127.0.0.1:6379/0"
PROJECT = {"mysite", "shop"}


def blocks(lang: str) -> list[str]:
    return [text for kind, text in BLOCK.findall(DOC.read_text()) if kind == lang]


def project_files() -> dict[str, tuple[str, bool]]:
    """Path -> (text, added at the end of the generated file?) for every Python block."""
    files: dict[str, tuple[str, bool]] = {}
    for text in blocks("python"):
        header = HEADER.fullmatch(text.splitlines()[0])
        assert header, f"a Python block in {DOC.name} is not headed by the file it is: {text.splitlines()[0]!r}"
        assert header["path"] not in files, f"{header['path']} is given twice"
        files[header["path"]] = (text, bool(header["append"]))
    return files


def install_line() -> list[str]:
    for text in blocks("sh"):
        for line in text.splitlines():
            words = shlex.split(line, comments=True)
            if words[:2] == ["pip", "install"]:
                return words[2:]
    raise AssertionError(f"{DOC.name} has no `pip install` line")


def installed_closure(requirements: list[str]) -> set[str]:
    """The distributions `pip install <requirements>` brings, read from what is installed."""
    seen: set[tuple[str, str]] = set()
    todo = [Requirement(text) for text in requirements]
    names: set[str] = set()
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        for extra in requirement.extras | {""}:
            if (name, extra) in seen:
                continue
            seen.add((name, extra))
            names.add(name)
            for text in metadata.requires(name) or []:
                needed = Requirement(text)
                if needed.marker is None or needed.marker.evaluate({"extra": extra}):
                    todo.append(needed)
    return names


def distributions_of(module: str) -> set[str]:
    found = metadata.packages_distributions().get(module, [])
    # An editable install (this checkout) lists a finder, not its package: fall back to the name.
    return {canonicalize_name(name) for name in found} or {canonicalize_name(module)}


def outside(modules: set[str], closure: set[str]) -> dict[str, set[str]]:
    """The third-party top-level modules whose distribution the install line does not bring."""
    return {
        module: distributions_of(module)
        for module in sorted(modules)
        if module not in sys.stdlib_module_names and module not in PROJECT
        and not module.startswith("_")  # interpreter start-up hooks (.pth files), not the project's needs
        and not distributions_of(module) & closure
    }


def hidden_modules(closure: set[str]) -> set[str]:
    """Top-level modules installed here by distributions the install line does not bring."""
    return {
        module for module, names in metadata.packages_distributions().items()
        if module.isidentifier() and module not in sys.stdlib_module_names
        and not {canonicalize_name(name) for name in names} & closure
    }


def block_modules(files: dict[str, tuple[str, bool]]) -> set[str]:
    """Top-level modules the blocks import, name in INSTALLED_APPS or as a cache BACKEND."""
    modules: set[str] = set()
    for text, _ in files.values():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
            elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "INSTALLED_APPS" for t in node.targets
            ):
                modules.update(elt.value.split(".")[0] for elt in node.value.elts  # type: ignore[attr-defined]
                               if isinstance(elt, ast.Constant))
            elif isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values, strict=True):
                    if (isinstance(key, ast.Constant) and key.value == "BACKEND"
                            and isinstance(value, ast.Constant)):
                        modules.add(value.value.split(".")[0])
    return modules


def test_the_walkthrough_sees_only_what_the_install_line_brings(tmp_path: Path, own_redis: RedisServer) -> None:
    project = Walkthrough(tmp_path, own_redis)
    hidden = project.env["SGM_HIDDEN_MODULES"].split(",")
    assert {"pytest", "websockets", "psycopg"} <= set(hidden)
    assert not {"httpx", "daphne", "django_redis", "rest_framework", "twisted"} & set(hidden)
    seen = subprocess.run([sys.executable, "-c", "import websockets"], env=project.env, capture_output=True,
                          text=True, cwd=tmp_path)
    assert "No module named 'websockets' (the install line does not bring it)" in seen.stderr


def test_the_blocks_need_nothing_beyond_the_install_line() -> None:
    line = install_line()
    assert line == ["supergraph-messaging[daphne]", "httpx"]
    modules = block_modules(project_files())
    assert {"httpx", "daphne", "django_redis", "rest_framework", "channels"} <= modules
    assert outside(modules, installed_closure(line)) == {}


class Walkthrough:
    """The project of docs/installation.md in a directory of its own, and its processes."""

    def __init__(self, where: Path, redis: RedisServer) -> None:
        self.dir = where
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "REDIS_URL")}
        self.env.update(PYTHONUNBUFFERED="1", CATALOG_URL=self.base, DJANGO_SUPERUSER_PASSWORD="walk-through-9",
                        PYTHONPATH=str(ROOT / "tests" / "support" / "install_line"),
                        SGM_HIDDEN_MODULES=",".join(sorted(hidden_modules(installed_closure(install_line())))))
        self.redis_url = redis.url
        self.processes: dict[str, subprocess.Popen[str]] = {}

    def run(self, *args: str) -> str:
        done = subprocess.run([sys.executable, *args], cwd=self.dir, env=self.env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout + done.stderr

    def manage(self, *args: str) -> str:
        return self.run("manage.py", *args)

    def build(self) -> None:
        self.run("-m", "django", "startproject", "mysite", str(self.dir))
        self.manage("startapp", "shop")
        for path, (text, append) in project_files().items():
            target = self.dir / path
            if append:
                generated = target.read_text()
                assert DOCUMENTED_REDIS in text
                target.write_text(generated + "\n" + text.replace(DOCUMENTED_REDIS, self.redis_url))
            else:
                target.write_text(text)
        self.manage("makemigrations", "shop")
        self.manage("migrate")
        assert "System check identified no issues" in self.manage("check")
        self.manage("createsuperuser", "--noinput", "--username", "alice", "--email", "alice@example.org")
        token = re.search(r"Generated token (\w+)", self.manage("drf_create_token", "alice"))
        assert token
        self.token = token.group(1)

    def start(self, name: str, *args: str) -> None:
        log = (self.dir / f"{name}.log").open("w")
        self.processes[name] = subprocess.Popen([sys.executable, "manage.py", *args],
                                                cwd=self.dir, env=self.env, stdout=log, stderr=log, text=True)

    def log(self, name: str) -> str:
        return (self.dir / f"{name}.log").read_text()

    def stop(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()

    def lookup(self, skus: list[str], invalidate: bool = False) -> list[Any]:
        code = ("import json\nfrom shop.subscribers import product_by_sku\n"
                f"skus = {skus!r}\n"
                + ("for sku in skus: product_by_sku.invalidate(sku)\n" if invalidate else "")
                + "print('LOOKUP', json.dumps([product_by_sku(sku) for sku in skus]))")
        out = self.manage("shell", "-c", code)
        return json.loads(out.split("LOOKUP ", 1)[1].splitlines()[0])  # type: ignore[no-any-return]

    def price_log(self) -> list[tuple[str, Decimal]]:
        with sqlite3.connect(self.dir / "db.sqlite3") as db:
            rows = db.execute("SELECT sku, price FROM shop_pricelog ORDER BY id").fetchall()
        return [(sku, Decimal(str(price)).quantize(Decimal("0.01"))) for sku, price in rows]


@pytest.fixture
def walkthrough(tmp_path: Path, own_redis: RedisServer) -> Iterator[Walkthrough]:
    project = Walkthrough(tmp_path / "walkthrough", own_redis)
    project.dir.mkdir()
    try:
        yield project
    finally:
        project.stop()


def wait_for(probe: Any, what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = probe()
        except (httpx.HTTPError, OSError):
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def strip(data: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in data.items() if key != "_meta"}


def fallbacks(walkthrough: Walkthrough) -> list[str]:
    """The SKUs product_by_sku asked the API for, from runserver's access log."""
    return re.findall(r"HTTP GET /api/products/\?sku=([\w-]+) 200", walkthrough.log("web"))


def subscribe_frames(token: str) -> list[dict[str, Any]]:
    (text,) = blocks("json")
    return [json.loads(line.replace("<the token>", token)) for line in text.splitlines() if line.strip()]


async def stream(url: str, origin: str, frames: list[dict[str, Any]], started: asyncio.Event,
                 received: dict[str, list[dict[str, Any]]]) -> None:
    async with websockets.connect(url, origin=origin) as ws:  # type: ignore[arg-type]
        for frame in frames:
            await ws.send(json.dumps(frame))
        ids = {frame["id"] for frame in frames if frame.get("type") == "subscribe"}
        subscribed: set[str] = set()
        while True:
            message = json.loads(await ws.recv())
            if message["type"] == "ping":
                await ws.send(json.dumps({"type": "pong", "payload": message.get("payload")}))
            elif message["type"] == "subscribed":
                subscribed.add(message["id"])
                if subscribed == ids:
                    started.set()
            elif message["type"] == "next":
                received.setdefault(message["id"], []).append(message["payload"]["data"])
            elif message["type"] != "connection_ack":
                raise AssertionError(f"unexpected frame {message}")


@pytest.mark.slow
async def test_the_walkthrough_runs_as_documented(walkthrough: Walkthrough, own_redis: RedisServer) -> None:
    await asyncio.to_thread(walkthrough.build)
    walkthrough.start("web", "runserver", f"127.0.0.1:{walkthrough.port}", "--noreload")
    walkthrough.start("worker", "messaging_listen")
    base, api = walkthrough.base, walkthrough.base + "/api/products/"
    await asyncio.to_thread(wait_for, lambda: httpx.get(api).status_code == 200, "runserver")
    client = own_redis.client()
    await asyncio.to_thread(wait_for, lambda: client.pubsub_numsub("product.updated")[0][1] >= 1, "the worker")

    catalog = {"A-1": "19.99", "B-2": "25.00", "C-3": "5.50"}
    ids = {}
    async with httpx.AsyncClient() as http:
        for sku, price in catalog.items():
            response = await http.post(api, json={"sku": sku, "name": f"Product {sku}", "price": price})
            assert response.status_code == 201, response.text
            ids[sku] = response.json()["id"]

    # Pattern 1, the cached lookup: CacheSync wrote each product at its commit; the HTTP
    # fallback (the ?sku= filter) writes the same shape; an unknown SKU is None, not cached.
    skus = [*catalog, "Z-9"]
    expected = [{"id": ids[sku], "sku": sku, "price": catalog[sku]} for sku in catalog] + [None]
    assert await asyncio.to_thread(walkthrough.lookup, skus) == expected
    assert fallbacks(walkthrough) == ["Z-9"]  # the rest were hits
    assert await asyncio.to_thread(walkthrough.lookup, skus, True) == expected
    assert fallbacks(walkthrough) == ["Z-9", *skus]

    # Pattern 2, live subscriptions: the documented frames, the documented filters.
    received: dict[str, list[dict[str, Any]]] = {}
    started = asyncio.Event()
    listener = asyncio.create_task(stream(f"ws://127.0.0.1:{walkthrough.port}/subscribe", base,
                                          subscribe_frames(walkthrough.token), started, received))
    await asyncio.wait_for(started.wait(), 15)
    changes = [("A-1", "18.00"), ("B-2", "15.50"), ("C-3", "21.00"), ("B-2", "30.00"),
               ("A-1", "19.99"), ("C-3", "20.00"), ("A-1", "20.01"), ("B-2", "19.00")]
    async with httpx.AsyncClient() as http:
        for sku, price in changes:
            response = await http.patch(f"{api}{ids[sku]}/", json={"price": price})
            assert response.status_code == 200, response.text
    cheap = [{"id": ids[sku], "sku": sku, "price": price} for sku, price in changes if Decimal(price) < 20]
    picked = [{"sku": sku, "price": price} for sku, price in changes if sku in ("A-1", "C-3")]

    def arrived() -> bool:
        return len(received.get("cheap", [])) >= len(cheap) and len(received.get("picked", [])) >= len(picked)

    deadline = time.monotonic() + 15
    while not arrived() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await asyncio.sleep(1)  # anything extra would arrive now
    listener.cancel()
    assert [strip(data) for data in received.get("cheap", [])] == cheap
    assert [strip(data) for data in received.get("picked", [])] == picked
    # one event per change, though both the ViewSet and register_model_events publish it
    metas = [data["_meta"] for data in received["cheap"]]
    assert {meta["event"] for meta in metas} == {"product.updated"}
    assert len({meta["event_id"] for meta in metas}) == len(cheap)

    # Pattern 3, the notification handler: one PriceLog row per change, in the worker's process.
    rows = [(sku, Decimal(price)) for sku, price in changes]
    assert await asyncio.to_thread(wait_for, lambda: walkthrough.price_log() == rows, "the price log", 15)

    # The cache followed every change: the lookups return the last price of each product.
    final = {sku: price for sku, price in changes}
    assert await asyncio.to_thread(walkthrough.lookup, list(catalog)) == [
        {"id": ids[sku], "sku": sku, "price": final[sku]} for sku in catalog]

    for name in ("web", "worker"):
        assert "Traceback" not in walkthrough.log(name), walkthrough.log(name)[-3000:]
