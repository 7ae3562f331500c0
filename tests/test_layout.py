"""The layout's arrows (issue 22): every import of ``ledger/`` and ``server/`` goes downward, type-only and
function-level imports included; the README's module table names every module once; the design card's
``schema.sql`` is the one the ledger ships.

Layers, low to high: ``ledger`` < the shared leaves < ``core`` < the four adapters (``manager``, ``wallet``,
``events``, ``admin``, independent of each other) < ``app`` (the wiring) < ``cli``, ``ops``, ``testing`` and
``client`` (the manager API's client: testing's, bench's and integrators').
``ledger`` imports neither ``syncledger.server`` nor ``trio``, and its own modules import only those before them in
LEDGER_ORDER; nothing outside ``testing`` imports ``testing`` or ``trio.testing``. ALLOWED lists the arrows that
still go the wrong way: it may only shrink (an entry no longer needed fails the test too)."""

from __future__ import annotations

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = {"syncledger.ledger": ROOT / "ledger", "syncledger.server": ROOT / "server"}

LEDGER_ORDER = ["errors", "money", "rules", "chain", "engine", "migrations", "reads", "report", "commands", "finance", "wallet", "store",
                "verify", "codec", "__init__"]
ADAPTERS = ("manager", "wallet", "events", "admin")
RANK = {"ledger": 0, "leaf": 1, "core": 2, **{a: 3 for a in ADAPTERS}, "app": 4, "cli": 5, "ops": 5, "testing": 5,
        "client": 5}
BESIDE = {("cli", "ops"), ("testing", "client")}  # the top rank's arrows between packages
LEAVES = {"auth", "limits", "logs", "metrics", "http", "health", "config", "wire", "fields", "listen", "backups",
          "__init__"}
# Modules of server/ not yet in a subpackage of their concern: where each belongs.
FLAT = {
    "scenario": "testing",  # (python -m syncledger.server.scenario: the toolkit's runner)
    "services": "core",  # (the Protocol the adapters see: it names core types)
    "app": "app", "cli": "cli", "client": "client",
}
ALLOWED: set[tuple[str, str]] = set()  # (empty since issue 22: keep it so)


def _modules() -> dict[str, pathlib.Path]:
    """``ledger.x`` / ``server.y.z`` -> its file (``__init__`` named by its package)."""
    found = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            found[".".join([package.removeprefix("syncledger."), *parts])] = path
    return found


def _imports(name: str, path: pathlib.Path, known: set[str]) -> set[str]:
    """What ``name`` imports of the project (modules, not names in them), and of trio."""
    tree = ast.parse(path.read_text())
    package = name.split(".")[:-1] if not name.endswith("__init__") else name.split(".")[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package[: len(package) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            base = base.removeprefix("syncledger.")
            for alias in node.names:
                target = f"{base}.{alias.name}" if base else alias.name
                found.add(target if target in known or f"{target}.__init__" in known else base)
        elif isinstance(node, ast.Import):
            found.update(alias.name.removeprefix("syncledger.") for alias in node.names)
    out = set()
    for target in found:
        if target in known:
            out.add(target)
        elif f"{target}.__init__" in known:
            out.add(f"{target}.__init__")
        elif target.split(".")[0] == "trio":
            out.add(target)
    return out


def _concern(name: str) -> str:
    """The package a module belongs to (see the module docstring)."""
    parts = name.split(".")
    if parts[0] == "ledger":
        return "ledger"
    if len(parts) > 2:  # server.<subpackage>.module
        return parts[1]
    if parts[1] in LEAVES:
        return "leaf"
    return FLAT[parts[1]]


def _wrong(source: str, target: str) -> str | None:
    """Why the import ``source`` -> ``target`` goes the wrong way, or None."""
    if target.startswith("trio"):
        if source.startswith("ledger"):
            return "the ledger imports no trio"
        if target.startswith("trio.testing") and _concern(source) != "testing":
            return "only testing/ imports trio.testing"
        return None
    a, b = _concern(source), _concern(target)
    if a == "ledger" and b == "ledger":
        order = [m.split(".")[-1] for m in (source, target)]
        if order[0] == "__init__" or LEDGER_ORDER.index(order[1]) < LEDGER_ORDER.index(order[0]):
            return None
        return f"inside the ledger, {order[0]} comes before {order[1]}"
    if a == b:
        return None
    if b == "testing":
        return "only testing/ imports testing"
    if RANK[b] > RANK[a]:
        return f"{a} is below {b}"
    if RANK[b] == RANK[a] and (a, b) not in BESIDE:
        return f"{a} and {b} are independent"
    return None


def test_every_import_goes_downward():
    modules = _modules()
    known = set(modules)
    edges = {(m, t) for m, path in modules.items() for t in _imports(m, path, known)}
    wrong = {(s.removesuffix(".__init__"), t.removesuffix(".__init__")): why
             for s, t in edges if (why := _wrong(s, t)) is not None}
    new = sorted(f"{s} -> {t}: {why}" for (s, t), why in wrong.items() if (s, t) not in ALLOWED)
    assert not new, "imports that go the wrong way:\n" + "\n".join(new)
    stale = sorted(f"{s} -> {t}" for s, t in ALLOWED if (s, t) not in wrong)
    assert not stale, "no longer needed in ALLOWED (remove them):\n" + "\n".join(stale)


def test_the_readme_names_every_module_once():
    readme = (ROOT / "README.md").read_text()
    named = re.findall(r"`((?:ledger|server)/[\w/]+\.py)`", "\n".join(
        line for line in readme.splitlines() if line.startswith("| `")))
    files = sorted(str(p.relative_to(ROOT)) for folder in PACKAGES.values() for p in folder.rglob("*.py")
                   if p.name != "__init__.py" or _holds_code(p))
    counts = {f: named.count(f) for f in files}
    assert {f: n for f, n in counts.items() if n != 1} == {}, "the README's module table names these not once"
    assert sorted(set(named) - set(files)) == [], "the README's module table names modules that do not exist"


def _holds_code(path: pathlib.Path) -> bool:
    """More than a docstring (a package's ``__init__`` that is a module of its own, or a facade)."""
    body = ast.parse(path.read_text()).body
    return len(body) > (1 if body and isinstance(body[0], ast.Expr) else 0)


def test_schema_sql_is_the_one_the_ledger_ships():
    assert (ROOT / "schema.sql").read_bytes() == (ROOT / "ledger" / "schema.sql").read_bytes()
