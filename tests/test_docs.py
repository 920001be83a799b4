"""The Markdown docs against the tree they describe.

- Every relative link of the README, ``docs/``, ``examples/`` and ``bench/`` pages names a
  file or directory of the repository, and so does every path of the repository they spell
  out (``gateway/io/fanout.py``, ``gateway/core/stats``, ``gateway/io/fanout.Fanout``).
- The README's layout table has a row for every top-level directory of the repository,
  and each package's row names every module of the package and no module that is not one.
- docs/architecture.md's table of state machines names every state table of the code
  (``*TRANSITIONS``), where it is, and exactly the states of its state enum, in order.
- docs/protocol.md names the words of every status reason the cores can publish, read
  from their source (``*_REASON`` constants, and what the status calls are given), and
  docs/metrics.md every cause the venue runtime renews a connection for.
- docs/architecture.md quotes no timing: it names the benchmark that measures each path.
- docs/architecture.md's drawing of the layers names every module of the packages it
  draws, and its table of layers states the rules tests/test_layering.py holds the code to.
- docs/architecture.md's table of venue limits gives the limits the venue registry gives
  the gateway: attempts per window, messages per second, streams per connection, REST.
- The README's venue table names every venue of the registry with its arbitration mode.
- Every metric a page names is a family of docs/metrics.md's tables (which
  tests/gateway/io/test_metrics.py holds to what is exported), and every class or constant
  a page writes as code (``SequencedBook``, ``VenuePipeline.stop``, ``SCORE_ALPHA``) is
  defined or imported by the code; every snake_case name one writes (``check_listening``)
  is spelled by the code.

The tables are read from the pages and the code is walked: nothing here lists modules or
tables, so a module or a table added without its line in the docs fails.
"""

from __future__ import annotations

import ast
import enum
import importlib
import pkgutil
import re
import subprocess
from collections.abc import Iterator
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import pytest

from gateway.core.sequenced import SYNC_TRANSITIONS
from gateway.core.sequenced import SyncAction
from gateway.wire.venues import ADAPTERS
from tests.markdown import CODE
from tests.markdown import table_rows
from tests.test_layering import MAY_USE
from tests.test_layering import PURE_LAYERS
from tests.test_layering import SIM_SHELLS

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
PAGES = [
    README,
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "examples" / "README.md",
    ROOT / "bench" / "README.md",
]
#: ``[text](target)``, the target up to a space or the closing parenthesis.
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)[^)]*\)")
#: Targets that leave the repository, or stay on the page.
EXTERNAL = re.compile(r"^([a-z][a-z0-9+.-]*:|#)")
#: A path of the repository spelled out in prose: a top-level directory, then more.
PATH = re.compile(
    r"(?<![\w/.<-])((?:gateway|feeds|docs|tests|bench|examples|deploy)/[\w./-]*[\w/])"
)


def tracked_files() -> list[str]:
    """The repository's files as git tracks them (its working tree's, not the ignored)."""
    listing = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return listing.splitlines()


def links(page: Path) -> Iterator[str]:
    """The page's relative link targets, without their fragment; code blocks skipped."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    for target in LINK.findall(text):
        if not EXTERNAL.match(target):
            yield target.partition("#")[0]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_names_a_file_of_the_repository(page: Path) -> None:
    broken = [t for t in links(page) if not (page.parent / t).resolve().exists()]
    assert broken == [], f"{page.relative_to(ROOT)}: broken links"


def test_the_link_check_sees_a_broken_link(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("[ok](page.md), [gone](missing.md#part), [web](https://x.example)\n")
    assert list(links(page)) == ["page.md", "missing.md"]


def names_a_path(mention: str) -> bool:
    """Whether ``mention`` is a file or directory of the repository, a module without its
    ``.py``, or a module's class, function or constant, or a class's method
    (``gateway/io/fanout.Fanout.publish``)."""
    if (ROOT / mention).exists() or (ROOT / f"{mention}.py").exists():
        return True
    directory, _, last = mention.rpartition("/")
    module, _, names = last.partition(".")
    source = ROOT / directory / f"{module}.py"
    if not names or not source.exists():
        return False
    text = source.read_text()
    return all(
        re.search(rf"^\s*(class|def|async def) {name}\b|^{name}\b.*=", text, re.MULTILINE)
        for name in names.split(".")
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_path_a_page_spells_out_is_in_the_repository(page: Path) -> None:
    mentions = set(PATH.findall(page.read_text()))
    assert [m for m in sorted(mentions) if not names_a_path(m)] == []


def test_the_path_check_sees_a_path_that_is_gone() -> None:
    assert names_a_path("gateway/io/fanout.Fanout") and names_a_path("gateway/core/stats")
    assert names_a_path("gateway/io/fanout.Fanout.publish")
    assert not names_a_path("gateway/io/fanout.Fanout.broadcast")
    assert names_a_path("docs/") and names_a_path("tests/test_docs.py")
    assert not names_a_path("gateway/io/fanout.Fanin")
    assert not names_a_path("docs/exchange-protocols.md")
    assert PATH.findall("(see docs/metrics.md, and ../shared/docs/a.md)") == ["docs/metrics.md"]


def layout() -> dict[str, str]:
    """The README's layout table: each path, with what its row says of it."""
    return {path.strip("`"): what for path, what in table_rows(README.read_text(), "| path |")}


def test_the_readme_layout_table_has_a_row_for_every_top_level_directory() -> None:
    rows = layout()
    directories = {f.split("/")[0] + "/" for f in tracked_files() if "/" in f}
    directories -= {d for d in directories if d.startswith(".")}
    missing = {d for d in directories if not any(path.startswith(d) for path in rows)}
    assert missing == set(), "directories without a row in the README's layout table"
    assert all((ROOT / path).exists() for path in rows), "rows naming nothing"


def package_rows() -> dict[Path, str]:
    """The layout rows naming a package (a directory with an ``__init__.py``)."""
    rows = {ROOT / path: what for path, what in layout().items() if path.endswith("/")}
    return {path: what for path, what in rows.items() if (path / "__init__.py").exists()}


def modules_of(package: Path) -> set[str]:
    return {p.stem for p in package.glob("*.py")} - {"__init__", "__main__"}


def test_each_package_row_of_the_readme_names_every_module_of_its_package() -> None:
    rows = package_rows()
    assert {ROOT / "gateway" / "core", ROOT / "feeds" / "sim"} <= set(rows)
    every_module = {
        m for package in ROOT.glob("**/__init__.py") for m in modules_of(package.parent)
    }
    for package, what in rows.items():
        named = set(CODE.findall(what))
        assert modules_of(package) - named == set(), f"{package.relative_to(ROOT)}: unnamed"
        # A bare name in a row is a module (of that package, or one it is built around).
        modules_named = {n for n in named if re.fullmatch(r"[a-z_]+", n)}
        assert modules_named - every_module == set(), f"{package.relative_to(ROOT)}: no such"


def project_modules() -> Iterator[str]:
    """Every module of the ``gateway`` and ``feeds`` packages but ``__main__``."""
    for name in ("gateway", "feeds"):
        package = importlib.import_module(name)
        yield name
        for info in pkgutil.walk_packages(package.__path__, prefix=name + "."):
            if not info.name.endswith("__main__"):
                yield info.name


def state_tables() -> dict[tuple[str, str], type[enum.Enum]]:
    """Every module-level ``*TRANSITIONS`` table of the code, by (path, name), with the
    enum of its states (the first member of its keys)."""
    tables: dict[tuple[str, str], type[enum.Enum]] = {}
    for module_name in project_modules():
        module = importlib.import_module(module_name)
        path = module_name.replace(".", "/") + ".py"
        for name, value in vars(module).items():
            if name.endswith("TRANSITIONS") and isinstance(value, Mapping):
                state, _ = next(iter(value))
                tables[(path, name)] = type(state)
    return tables


def state_names(states: type[enum.Enum]) -> list[str]:
    """How the docs spell a machine's states: its string values, else its member names."""
    return [
        s.value if isinstance(s.value, str) else s.name.lower().replace("_", " ") for s in states
    ]


def test_architecture_names_every_state_table_with_its_states() -> None:
    tables = state_tables()
    assert len(tables) >= 10
    documented: dict[tuple[str, str], list[str]] = {}
    for _, where, documented_states in table_rows(ARCHITECTURE.read_text(), "| machine |"):
        path, name = CODE.findall(where)
        # A state may be explained in parentheses after its name.
        names = re.sub(r"\s*\([^)]*\)", "", documented_states)
        documented[(path, name)] = [s.strip() for s in names.split(",")]
    assert set(tables) - set(documented) == set(), "state tables missing in architecture.md"
    assert set(documented) - set(tables) == set(), "documented state tables that are not"
    for key, state_enum in tables.items():
        assert documented[key] == state_names(state_enum), key


# --- the status reasons of docs/protocol.md -----------------------------------------------------

PROTOCOL = ROOT / "docs" / "protocol.md"
CORE = ROOT / "gateway" / "core"
#: The calls by which a core publishes a symbol's status, with the reason's position.
STATUS_CALLS: Final = {"_status": 1, "_output": 1, "StatusChange": 2}


def announcing_sync_events() -> set[str]:
    """The sync events of SequencedBook whose transitions tell subscribers something: the
    ``reason`` of a ``_sync`` call with one of them may reach a status."""
    announcing = {
        SyncAction.PUBLISH_RESET,
        SyncAction.ANNOUNCE_RESYNC,
        SyncAction.ANNOUNCE_VENUE_RESET,
        SyncAction.START_RETRY_CLOCK,
    }
    return {
        event.name
        for (_, event), (_, actions) in SYNC_TRANSITIONS.items()
        if announcing & set(actions)
    }


class ReasonTexts:
    """The literal texts of what a status reason can be made of, read from the cores'
    source: string constants, the literal parts of f-strings, followed through local
    variables (assigned above their use), module constants and the functions of
    ``gateway/core`` that build them.
    A function's parameters are where the reading stops (their callers are read)."""

    def __init__(self) -> None:
        self.modules = {path: ast.parse(path.read_text()) for path in sorted(CORE.glob("*.py"))}
        self.functions: dict[str, list[ast.FunctionDef]] = {}
        self.constants: dict[str, str] = {}
        for path, tree in self.modules.items():
            module = importlib.import_module(f"gateway.core.{path.stem}")
            for node in ast.walk(tree):
                if isinstance(node, ast.FunctionDef):
                    self.functions.setdefault(node.name, []).append(node)
            for name, value in vars(module).items():
                if isinstance(value, str) and name.isupper():
                    self.constants[name] = value

    def call_sites(self) -> Iterator[tuple[ast.expr, ast.FunctionDef]]:
        """Each reason expression given to a status, with the function it is in."""
        announcing = announcing_sync_events()
        for tree in self.modules.values():
            for function in ast.walk(tree):
                if not isinstance(function, ast.FunctionDef):
                    continue
                for call in ast.walk(function):
                    if not isinstance(call, ast.Call):
                        continue
                    name = called_name(call)
                    position = STATUS_CALLS.get(name)
                    if position is not None and len(call.args) > position:
                        yield call.args[position], function
                    elif name == "_sync":
                        event = call.args[0] if call.args else None
                        if isinstance(event, ast.Attribute) and event.attr not in announcing:
                            continue
                        for keyword in call.keywords:
                            if keyword.arg == "reason":
                                yield keyword.value, function

    def texts(self, node: ast.expr, function: ast.FunctionDef, seen: set[int]) -> Iterator[str]:
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.value
        elif isinstance(node, ast.JoinedStr):
            for part in node.values:
                yield from self.texts(part, function, seen)
        elif isinstance(node, ast.FormattedValue):
            yield from self.texts(node.value, function, seen)
        elif isinstance(node, (ast.IfExp, ast.BoolOp, ast.Tuple)):
            parts = (
                [node.body, node.orelse]
                if isinstance(node, ast.IfExp)
                else node.values
                if isinstance(node, ast.BoolOp)
                else node.elts
            )
            for part in parts:
                yield from self.texts(part, function, seen)
        elif isinstance(node, ast.Name):
            if node.id in self.constants:
                yield self.constants[node.id]
            for value in assigned(function, node.id, node.lineno):
                yield from self.texts(value, function, seen)
        elif isinstance(node, ast.Call):
            for argument in node.args:
                yield from self.texts(argument, function, seen)
            for callee in self.functions.get(called_name(node), []):
                for returned in ast.walk(callee):
                    if isinstance(returned, ast.Return) and returned.value is not None:
                        yield from self.texts(returned.value, callee, seen)


def called_name(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def assigned(function: ast.FunctionDef, name: str, line: int) -> Iterator[ast.expr]:
    """What ``name`` is assigned in ``function`` above ``line`` (the whole value of a tuple
    assignment)."""
    for node in ast.walk(function):
        if isinstance(node, ast.Assign) and node.lineno < line:
            for target in node.targets:
                names = target.elts if isinstance(target, ast.Tuple) else [target]
                if any(isinstance(n, ast.Name) and n.id == name for n in names):
                    yield node.value


def reason_fragments() -> set[str]:
    """The literal words of every status reason the cores can publish, trimmed of the
    punctuation around the values put between them."""
    reasons = ReasonTexts()
    # The reasons kept as constants (``*_REASON``), the shells' among them.
    texts = [text for name, text in reasons.constants.items() if name.endswith("_REASON")]
    for node, function in reasons.call_sites():
        texts.extend(reasons.texts(node, function, set()))
    fragments: set[str] = set()
    for text in texts:
        fragment = " ".join(text.split()).strip(" :;,()-")
        if sum(c.isalpha() for c in fragment) >= 2:
            fragments.add(fragment)
    return fragments


def test_protocol_names_every_status_reason_the_cores_publish() -> None:
    fragments = reason_fragments()
    for expected in (
        "every upstream connection down",
        "snapshot applied",
        "upstream back",
        "no valid replica",
        "ids missing on every connection",
        "rejected by the venue",
        "no usual rate measured yet",
        "snapshot not used; next snapshot in",
        "the gateway is stopping",
        "no book yet: the gateway is connecting to the venue",
    ):
        assert expected in fragments, "the reading of the cores misses a reason"
    assert "snapshot older than the stream" not in fragments, "a reason no status carries"
    protocol = " ".join(PROTOCOL.read_text().split())
    assert sorted(f for f in fragments if f not in protocol) == []


# --- the renewal causes of docs/metrics.md ---------------------------------------------------

METRICS = ROOT / "docs" / "metrics.md"


def renewal_causes() -> set[str]:
    """Every cause the venue runtime asks a renewal for (``VenueRenewals.due``), read from
    its source: a string, or the strings a local variable is assigned."""
    tree = ast.parse((ROOT / "gateway" / "io" / "venue_runtime.py").read_text())
    causes: set[str] = set()
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef):
            continue
        for call in ast.walk(function):
            if isinstance(call, ast.Call) and called_name(call) == "due" and len(call.args) == 2:
                cause = call.args[1]
                values = (
                    list(assigned(function, cause.id, cause.lineno))
                    if isinstance(cause, ast.Name)
                    else [cause]
                )
                causes |= {
                    node.value
                    for value in values
                    for node in ast.walk(value)
                    if isinstance(node, ast.Constant) and isinstance(node.value, str)
                }
    return causes


def test_metrics_names_every_renewal_cause() -> None:
    causes = renewal_causes()
    assert {"age", "notice", "score", "contradicted", "venue reset"} <= causes
    (row,) = [
        line
        for line in METRICS.read_text().splitlines()
        if line.startswith("| `mdgateway_slot_renewals_due_total` |")
    ]
    assert sorted(c for c in causes if f"`{c}`" not in row) == []


def test_the_architecture_page_quotes_no_timing_of_its_own() -> None:
    """A timing means something only with its machine and its run: the page names the
    benchmark that measures each path (``make bench``), never a figure."""
    figures = re.findall(r"\d[\d.,]*\s?(?:µs|ns|ms)\b", ARCHITECTURE.read_text(encoding="utf-8"))
    assert figures == []


# --- the layers of docs/architecture.md ----------------------------------------------------------

#: The layers' directories as the page's table names them, by the layer of tests/test_layering.py.
LAYER_PATHS: Final = {
    "gateway/core": "core",
    "feeds": "feeds",
    "gateway/wire": "wire",
    "gateway/capture": "capture",
    "feeds/sim": "sim",
    "gateway/io": "io",
    "gateway/tools": "tools",
}
#: The packages whose every module the page's drawing of the layers names.
DRAWN_PACKAGES: Final = ("gateway/core", "gateway/wire", "gateway/io", "gateway/tools")


def layers_drawing() -> str:
    """The code block of docs/architecture.md's section "The layers"."""
    section = ARCHITECTURE.read_text().partition("## The layers")[2]
    return section.split("```")[1]


def test_the_drawing_of_the_layers_names_every_module_of_its_packages() -> None:
    words = set(re.findall(r"\w+", layers_drawing()))
    for package in DRAWN_PACKAGES:
        missing = modules_of(ROOT / package) - words
        assert missing == set(), f"{package}: modules missing in architecture.md's drawing"
    shells = {module.rpartition(".")[2] for module in SIM_SHELLS}
    assert shells - words == set(), "feeds/sim shells missing in architecture.md's drawing"


def layer_table() -> dict[str, tuple[set[str], str]]:
    """docs/architecture.md's table of layers: each layer (as tests/test_layering.py names
    it), with the layers its row says it may import and its "pure" cell."""
    rows = {}
    for path, may_import, pure in table_rows(ARCHITECTURE.read_text(), "| layer |"):
        # What follows ";" is a remark (the simulator's shells).
        named = {
            LAYER_PATHS.get(w.strip("` "), w.strip("` "))
            for w in may_import.split(";")[0].split(",")
        }
        rows[LAYER_PATHS[path.strip("`")]] = (named, pure)
    return rows


def test_the_architecture_layer_table_states_the_layering_rules() -> None:
    rows = layer_table()
    assert set(rows) == set(LAYER_PATHS.values())
    for layer, (named, pure) in rows.items():
        if named == {"everything"}:
            assert set(rows) - {layer} <= MAY_USE[layer], layer
        elif named == {"nothing else of the project"}:
            assert MAY_USE[layer] == set(), layer
        else:
            assert named == MAY_USE[layer], layer
        assert pure.startswith("yes") == (layer in PURE_LAYERS), layer
    # The simulator's shells, named in its row, are those the layering test exempts.
    shells = {module.rpartition(".")[2] for module in SIM_SHELLS}
    assert set(CODE.findall(rows["sim"][1])) == shells


# --- names of the code written in the pages ------------------------------------------------------

METRIC: Final = re.compile(r"\bmdgateway_[a-z_]*[a-z]\b")
#: A row of docs/metrics.md's tables: the family's exposed name.
METRIC_ROW: Final = re.compile(r"^\| `([a-z_:]+)` \|", re.MULTILINE)
#: Samples of a histogram family besides its name.
HISTOGRAM_SAMPLE: Final = re.compile(r"_(bucket|count|sum)$")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_metric_a_page_names_is_in_the_metrics_tables(page: Path) -> None:
    """docs/metrics.md's tables are the metrics exported (tests/gateway/io/test_metrics.py);
    a name written elsewhere, in prose, is one of them or one of a histogram's samples."""
    documented = set(METRIC_ROW.findall(METRICS.read_text()))
    assert len(documented) > 40
    named = set(METRIC.findall(page.read_text()))
    unknown = {
        n for n in named if n not in documented and HISTOGRAM_SAMPLE.sub("", n) not in documented
    }
    assert sorted(unknown) == [], f"{page.relative_to(ROOT)}: metrics that are not exported"


#: A code span that is a name of the code: a class (``SequencedBook``), a constant
#: (``SCORE_INTERVAL_S``), or either with attributes and a call (``VenuePipeline.stop``,
#: ``AttemptBudget.wait_s(now_s, attempts=n)``).
CODE_NAME: Final = re.compile(
    r"((?:[A-Z][a-z0-9]+[A-Z]\w*|[A-Z0-9]+_[A-Z0-9_]+)(?:\.\w+)*"
    r"|[A-Z][a-z0-9]\w*(?:\.\w+)+)(?:\(.*\))?"
)


def code_source() -> str:
    """The source of every module of gateway, feeds and bench, in one text."""
    return "\n".join(
        (ROOT / f).read_text()
        for f in tracked_files()
        if f.endswith(".py") and f.startswith(("gateway/", "feeds/", "bench/"))
    )


def is_a_name_of(source: str, name: str) -> bool:
    """Whether ``source`` defines ``name`` (a class, a function, an assignment, a field or
    an enum member), imports it, or spells it as a string (an environment variable)."""
    return (
        re.search(
            rf"^\s*(?:class|def|async def) {name}\b|^\s*(?:self\.)?{name}\s*[:=]"
            rf"|^(?:from|import) [^\n]*\b{name}\b|^\s+{name},$|\"{name}\"",
            source,
            re.MULTILINE,
        )
        is not None
    )


def code_names(page: Path) -> set[str]:
    """The names of the code the page writes in code spans, code blocks left out."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    names = set()
    for span in CODE.findall(text):
        match = CODE_NAME.fullmatch(span)
        if match is not None:
            names.add(match[1])
    return names


#: A code span that is a snake_case name (``check_listening``, ``audit_every``,
#: ``silence_factor=0``): a function, attribute, parameter or configuration key.
SNAKE_NAME: Final = re.compile(r"([a-z][a-z0-9]*_[a-z0-9_]*)(?:\(.*\)|=\w+)?")


def snake_names(page: Path) -> set[str]:
    """The snake_case names the page writes in code spans, code blocks and metric names
    (docs/metrics.md's tables, checked against the exporter) left out."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    metrics = set(METRIC_ROW.findall(METRICS.read_text()))
    names = set()
    for span in CODE.findall(text):
        match = SNAKE_NAME.fullmatch(span)
        if match is not None and match[1] not in metrics and not METRIC.fullmatch(match[1]):
            names.add(match[1])
    return names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_class_and_constant_a_page_names_is_in_the_code(page: Path) -> None:
    source = code_source()
    unknown = {
        name
        for name in code_names(page)
        if not all(is_a_name_of(source, part) for part in name.split("."))
    }
    assert sorted(unknown) == [], f"{page.relative_to(ROOT)}: names the code does not have"
    # A snake_case name need not be defined here (a library's, a keyword argument's): the
    # code spells it somewhere, or the page names something gone.
    absent = {n for n in snake_names(page) if not re.search(rf"\b{n}\b", source)}
    assert sorted(absent) == [], f"{page.relative_to(ROOT)}: names the code never spells"


def test_the_name_check_sees_a_name_that_is_gone() -> None:
    source = "class VenuePipeline:\n    def stop(self) -> None: ...\nSCORE_ALPHA: Final = 0.3\n"
    assert is_a_name_of(source, "VenuePipeline") and is_a_name_of(source, "stop")
    assert is_a_name_of(source, "SCORE_ALPHA") and not is_a_name_of(source, "SCORE_BETA")
    spans = "`VenuePipeline.stop`, `AttemptBudget.wait_s(now_s, attempts=n)`, `Host`, `live`"
    page_names = {m[1] for s in CODE.findall(spans) if (m := CODE_NAME.fullmatch(s))}
    assert page_names == {"VenuePipeline.stop", "AttemptBudget.wait_s"}
    assert {"check_listening", "audit_every", "switch_margin_ns"} <= snake_names(ARCHITECTURE)
    assert not {n for n in snake_names(METRICS) if n.startswith(("mdgateway_", "process_"))}
    assert len(code_names(ARCHITECTURE)) > 50


# --- the venue limits of docs/architecture.md ----------------------------------------------------

#: A cell's leading figure (``21,000 argument characters``, ``4 (venue: 5)``) ...
FIGURE: Final = re.compile(r"([\d,]+)")
#: ... and its window, after "/" before any remark (``300 / 300 s``, ``6000 weight / 60 s``).
WINDOW: Final = re.compile(r"[\d,]+[^/(;]*/ ([\d.]+) s\b")


def figure(cell: str) -> tuple[float, float | None] | None:
    """A cell's leading figure and window; None for a cell naming no limit."""
    match = FIGURE.match(cell)
    if match is None:
        return None
    window = WINDOW.match(cell)
    return float(match[1].replace(",", "")), None if window is None else float(window[1])


def test_the_venue_limits_table_gives_each_adapters_limits() -> None:
    """Each row of docs/architecture.md's "Venue limits" table against the limits the
    venue registry gives the gateway (``VenueAdapter.limits``): attempts per window,
    messages per second per connection, streams per connection and REST per window."""
    rows = table_rows(ARCHITECTURE.read_text(), "| venue | attempts / window per IP |")
    documented: dict[str, list[str]] = {}
    for venues, attempts, messages, streams, rest, _ in rows:
        cells = [attempts, messages, streams, rest]
        # "as USD-M": the row above's figure.
        cells = [
            documented["binance-usdm"][i] if cell.startswith("as USD-M") else cell
            for i, cell in enumerate(cells)
        ]
        for venue in CODE.findall(venues.partition("(")[0]):
            documented[venue] = cells
    assert set(documented) == set(ADAPTERS)
    for venue, (attempts, messages, streams, rest) in documented.items():
        limits = ADAPTERS[venue].limits
        assert figure(attempts) == (
            limits.connect_attempts_per_window,
            limits.connect_window_s,
        ), venue
        assert figure(messages) == (limits.messages_per_s, None), venue
        stream_figure = figure(streams)
        assert (None if stream_figure is None else stream_figure[0]) == (
            limits.max_streams_per_connection
        ), venue
        if "no REST" not in rest:
            assert figure(rest) == (limits.rest_weight_per_window, limits.rest_window_s), venue


def test_figures_are_read_as_written() -> None:
    assert figure("300 / 300 s (spot's: none documented)") == (300, 300.0)
    assert figure("6000 weight / 60 s") == (6000, 60.0)
    assert figure("21,000 argument characters; the symbol's topics") == (21000, None)
    assert figure("4 (venue: 5)") == (4, None)
    assert figure("2, and 8 per IP shared by every connection") == (2, None)
    assert figure("none documented") is None


def test_the_readme_venue_table_names_every_venue_with_its_mode() -> None:
    """The README's venue table: every venue id of the registry, once, with its
    arbitration mode (``sequenced: ...``, ``unsequenced: ...``)."""
    modes: dict[str, str] = {}
    for ids, _, merged in table_rows(README.read_text(), "| venue id |"):
        for venue in CODE.findall(ids):
            assert venue not in modes, venue
            modes[venue] = re.split(r"[:( ]", merged, maxsplit=1)[0]
    assert modes == {venue: adapter.mode for venue, adapter in ADAPTERS.items()}
