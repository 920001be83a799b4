"""The layers and their direction, checked over whole packages.

- Direction: every import between the project's modules (at any depth in a module, not only
  at its top) goes from a layer to one it may use; the core uses no other layer, nothing
  uses the tools.
- Purity: every module of a pure layer, imported alone in a fresh interpreter, leaves no
  asyncio, websockets, socket, uvloop or httpx in ``sys.modules``, so an import through any
  chain of other modules, the project's or a library's, is caught. A module loaded by
  another's probe is covered by it: alone, it would load a subset of those modules.
- Time comes in as an argument: no pure module reads a clock (``time.time``,
  ``time.monotonic``, ... or ``datetime.now``), found in its source; a clock passed on by a
  library (a default argument it reads) is not seen.

New modules are covered by where they stand; nothing here lists modules one by one except
the simulator's shell modules, the one place where a pure package holds a shell.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Each layer and the layers it may import (itself always).
MAY_USE: dict[str, set[str]] = {
    "core": set(),
    "feeds": {"core"},
    "wire": {"core", "feeds"},
    "capture": {"core", "wire", "feeds"},
    "sim": {"core", "feeds", "wire", "capture"},
    "io": {"core", "wire", "capture", "feeds"},
    "tools": {"core", "wire", "capture", "feeds", "sim", "io", "public"},
    "public": {"io"},
}
PURE_LAYERS = {"core", "feeds", "wire", "capture", "sim"}
#: The simulator's asyncio shells: the one server shell and the servers on it (the
#: simulated venues, the replay). Venue protocols and renderers are pure.
SIM_SHELLS = {
    "feeds.sim.shell",
    "feeds.sim.simulators",
    "feeds.sim.replay",
}
FORBIDDEN = ["asyncio", "websockets", "socket", "uvloop", "httpx"]


def layer_of(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "feeds":
        return "sim" if len(parts) > 1 and parts[1] == "sim" else "feeds"
    if len(parts) > 1 and parts[1] in MAY_USE:
        return parts[1]
    # gateway/__init__, gateway/__main__, gateway/client (the client's public path)
    return "tools" if module == "gateway.__main__" else "public"


def project_modules() -> list[str]:
    found = []
    for package in ("gateway", "feeds"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found.append(".".join(parts))
    return found


def path_of(module: str) -> Path:
    path = ROOT / Path(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def imports_of(module: str) -> set[str]:
    path = path_of(module)
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    known = set(project_modules())
    return {name for name in names if name in known and name != module}


def is_pure(module: str) -> bool:
    return layer_of(module) in PURE_LAYERS and module not in SIM_SHELLS


MODULES = project_modules()


def test_every_package_is_seen() -> None:
    layers = {layer_of(m) for m in MODULES}
    assert layers >= {"core", "feeds", "wire", "capture", "sim", "io", "tools"}


@pytest.mark.parametrize("module", MODULES)
def test_imports_follow_the_layers(module: str) -> None:
    layer = layer_of(module)
    wrong = sorted(
        name
        for name in imports_of(module)
        if layer_of(name) != layer and layer_of(name) not in MAY_USE[layer]
    )
    if module in SIM_SHELLS:
        wrong = [name for name in wrong if layer_of(name) != "io"]
    assert not wrong, f"{module} ({layer}) imports {wrong}"


def test_no_pure_module_imports_a_shell_module_of_its_own_package() -> None:
    for module in MODULES:
        if is_pure(module):
            assert not imports_of(module) & SIM_SHELLS, module


#: The clocks of ``time`` and ``datetime``: a pure module is given their readings instead.
TIME_CLOCKS = {
    "time",
    "time_ns",
    "monotonic",
    "monotonic_ns",
    "perf_counter",
    "perf_counter_ns",
    "process_time",
    "process_time_ns",
}
DATETIME_CLOCKS = {"now", "utcnow", "today"}


def clock_reads(source: str) -> list[str]:
    """The clocks ``source`` reads or imports: ``time.monotonic``, ``from time import
    time_ns``, ``datetime.now``, ``date.today`` (as written, after their line, in line
    order)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            owner, name = node.value.id, node.attr
            if (owner == "time" and name in TIME_CLOCKS) or (
                owner in {"datetime", "date"} and name in DATETIME_CLOCKS
            ):
                found.append((node.lineno, f"{owner}.{name}"))
        elif isinstance(node, ast.ImportFrom) and node.module == "time":
            found += [(node.lineno, f"from time import {a.name}") for a in node.names]
    return [f"{line}: {read}" for line, read in sorted(found)]


@pytest.mark.parametrize("module", [m for m in MODULES if is_pure(m)])
def test_pure_modules_read_no_clock(module: str) -> None:
    assert clock_reads(path_of(module).read_text()) == [], (
        f"{module} reads a clock: pass the time in"
    )


def test_the_clock_check_sees_clock_reads() -> None:
    source = (
        "import time\nfrom time import monotonic_ns\nfrom datetime import datetime\n"
        "a = time.time_ns()\nb = datetime.now()\nc = time.gmtime(0)\nclock = time.monotonic\n"
    )
    assert clock_reads(source) == [
        "2: from time import monotonic_ns",
        "4: time.time_ns",
        "5: datetime.now",
        "7: time.monotonic",
    ]


PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(sys.modules)))
"""


def _probe(module: str) -> set[str]:
    """The modules loaded by importing ``module`` alone in a fresh interpreter."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE, module],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, f"{module}: {result.stderr}"
    loaded: list[str] = json.loads(result.stdout)
    return set(loaded)


def test_pure_modules_import_no_io() -> None:
    pure = [m for m in MODULES if is_pure(m)]
    assert len(pure) > 20
    # Imported alone, a module loads no more than a module that imports it does, so one
    # probe covers every pure module it loaded; those importing the most go first.
    unprobed = sorted(pure, key=lambda m: len(imports_of(m)), reverse=True)
    found: dict[str, list[str]] = {}
    while unprobed:
        module = unprobed.pop(0)
        loaded = _probe(module)
        found[module] = sorted(loaded.intersection(FORBIDDEN))
        unprobed = [m for m in unprobed if m not in loaded]
    assert {m: f for m, f in found.items() if f} == {}


def test_the_probe_detects_an_io_import() -> None:
    assert "asyncio" in _probe("gateway.io.upstream")


def test_the_direction_check_sees_a_wrong_import() -> None:
    assert layer_of("gateway.io.service") not in MAY_USE["core"]
    assert layer_of("gateway.tools.cli") not in MAY_USE["io"]
    assert "gateway.core.model" in imports_of("gateway.core.book")


def _task_starts_outside_a_task_group(tree: ast.AST) -> list[int]:
    """Lines that start a task no TaskGroup owns: ``asyncio.ensure_future``,
    ``asyncio.create_task``, or ``create_task`` on an event loop."""
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        func = node.func
        owner = func.value
        if isinstance(owner, ast.Call) and isinstance(owner.func, ast.Attribute):
            owner_name = owner.func.attr  # asyncio.get_running_loop().create_task
        elif isinstance(owner, ast.Attribute):
            owner_name = owner.attr
        else:
            owner_name = owner.id if isinstance(owner, ast.Name) else ""
        if func.attr == "ensure_future" or (
            func.attr == "create_task"
            and owner_name in {"asyncio", "loop", "get_running_loop", "get_event_loop"}
        ):
            lines.append(node.lineno)
    return lines


@pytest.mark.parametrize("module", MODULES)
def test_every_task_is_started_in_a_task_group(module: str) -> None:
    path = path_of(module)
    lines = _task_starts_outside_a_task_group(ast.parse(path.read_text(), str(path)))
    assert lines == [], f"{module}: tasks started outside a TaskGroup at lines {lines}"


def test_the_task_check_sees_a_task_started_outside_a_task_group() -> None:
    code = (
        "f = asyncio.ensure_future(c())\n"
        "t = asyncio.create_task(c())\n"
        "u = asyncio.get_running_loop().create_task(c())\n"
        "v = tasks.create_task(c())\n"
    )
    assert _task_starts_outside_a_task_group(ast.parse(code)) == [1, 2, 3]
