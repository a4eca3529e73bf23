"""The import contract: each part of the package imports only the parts below it.

Every ``import`` statement is read, at any depth (inside functions and ``TYPE_CHECKING``
blocks too), so a cycle cannot hide behind an import inside a function. The layers,
lowest first:

- ``conf``, ``counters``, ``tracing``, ``exceptions``, ``signals``, ``models`` (and ``migrations``): the base;
- ``redis``: the transport;
- ``delivery``: Pub/Sub, streams, the outbox, consumer groups;
- ``events`` (on delivery) and ``realtime`` (on delivery), which do not know each other;
- ``cache`` (on events: invalidation follows events), ``gateway`` (on realtime; it also
  describes events and cache channels);
- ``operations`` (dead-letter tools, health probes: it reads all of the above);
- the top: ``admin``, ``checks``, ``management``, ``apps``, ``urls``, ``routing``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "supergraph_messaging"
NAME = "supergraph_messaging"

BASE = {"base"}
ALLOWED: dict[str, set[str]] = {
    "base": BASE,
    "redis": BASE | {"redis"},
    "delivery": BASE | {"redis", "delivery"},
    "events": BASE | {"redis", "delivery", "events"},
    "realtime": BASE | {"redis", "delivery", "realtime"},
    "cache": BASE | {"redis", "delivery", "events", "cache"},
    "gateway": BASE | {"redis", "delivery", "events", "cache", "realtime", "gateway"},
    "operations": BASE | {"redis", "delivery", "events", "cache", "realtime", "gateway", "operations"},
}
TOP = {"admin", "checks", "management", "apps", "urls", "routing", "__init__"}
BASE_MODULES = {"conf", "counters", "exceptions", "signals", "models", "migrations", "tracing"}


def layer(module: str) -> str:
    """The layer of a dotted module name inside the package."""
    parts = module.split(".")[1:] or ["__init__"]
    head = parts[0]
    if head in BASE_MODULES:
        return "base"
    if head in TOP:
        return "top"
    if head in ALLOWED:
        return head
    raise AssertionError(f"{module} belongs to no layer: add it to tests/test_layers.py")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_module(root: Path, dotted: str) -> bool:
    path = root.parent.joinpath(*dotted.split("."))
    return path.is_dir() or path.with_suffix(".py").exists()


def imports(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, module) for every import of the package in ``path``, relative ones resolved; in
    ``from a import b``, ``a.b`` when ``b`` is a module."""
    name = module_name(path, root)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == NAME]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join([*base, *([node.module] if node.module else [])])
            if target.split(".")[0] != NAME:
                continue
            for alias in node.names:
                child = f"{target}.{alias.name}"
                found.append((node.lineno, child if is_module(root, child) else target))
    return found


def violations(root: Path = PACKAGE) -> list[str]:
    problems = []
    for path in sorted(root.rglob("*.py")):
        here = layer(module_name(path, root))
        if here == "top":
            continue
        for line, target in imports(path, root):
            where = f"{path.relative_to(root.parent)}:{line}"
            if target == NAME:
                problems.append(f"{where}: imports a name from the package root, which imports everything "
                                "lazily; import it from its module")
            elif layer(target) not in ALLOWED[here]:
                problems.append(f"{where}: {here} imports {target} ({layer(target)})")
    return problems


def test_layers_point_one_way() -> None:
    assert violations() == []


def test_the_contract_sees_an_import_inside_a_function(tmp_path: Path) -> None:
    """A lower layer reaching up from inside a function is caught, as an import at the top would be."""
    fake = tmp_path / NAME
    for sub in ("redis", "delivery"):
        (fake / sub).mkdir(parents=True)
        (fake / sub / "__init__.py").write_text("")
    (fake / "delivery" / "streams.py").write_text("")
    (fake / "redis" / "client.py").write_text(
        "def publish():\n    from supergraph_messaging.delivery import streams\n    return streams\n")
    assert violations(fake) == [
        "supergraph_messaging/redis/client.py:2: redis imports supergraph_messaging.delivery.streams (delivery)"]


@pytest.mark.parametrize("module", ["supergraph_messaging.realtime.consumer", "supergraph_messaging.delivery.outbox"])
def test_layer_of(module: str) -> None:
    assert layer(module) in ALLOWED


def test_the_layout_stays_within_its_bounds() -> None:
    """At most 12 modules at the root and in each subpackage, no module over 400 lines, no class over 250."""
    too_big = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "migrations" in path.parts:
            continue
        source = path.read_text()
        if len(source.splitlines()) > 400:
            too_big.append(f"{path.relative_to(PACKAGE.parent)}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                length = node.end_lineno - node.lineno + 1
                if length > 250:
                    too_big.append(f"{path.relative_to(PACKAGE.parent)}: class {node.name}, {length} lines")
    crowded = [f"{d.relative_to(PACKAGE.parent)}: {n} modules"
               for d in [PACKAGE, *(p for p in PACKAGE.iterdir() if (p / "__init__.py").exists())]
               if d.name != "migrations" and (n := len(list(d.glob("*.py")))) > 12]
    assert too_big == [] and crowded == []
