"""DESIGN.md "Layering rules": what planner may import, checked at runtime and statically.

1. Only planner/gui imports PySide6/pyqtgraph.
2. planner outside simulate/ (precise mode) never imports torch, transformers, peft, bitsandbytes at module level.
3. The trainer's contract modules (protocol, config, rundir) are the only trainer modules planner
   imports, and they import nothing but the standard library, each other and planner's small
   stdlib-only modules (no torch, no transformers: the GUI reads run directories through them).
4. Within planner/gui, a page package (plan/, train/, hardware/, runs/) imports only itself,
   common/ and the shell (the modules directly in planner/gui: app, window, state); common/
   imports no page. Pages talk through the shell's AppState, never through each other.
Plus the budget that rule 2 buys: `python -m planner table` starts and finishes fast.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLANNER = ROOT / "planner"
HEAVY = ("torch", "transformers", "peft", "bitsandbytes")
GUI = ("PySide6", "pyqtgraph")

PROBE = """
import contextlib, io, json, sys
import planner, planner.cli, planner.memory, planner.catalog, planner.table, planner.hardware
out = io.StringIO()
with contextlib.redirect_stdout(out):
    codes = [
        planner.cli.main(["estimate", "--model", "meta-llama/Llama-2-7b-hf", "--json"]),
        planner.cli.main(["estimate", "--model", "meta-llama/Llama-2-7b-hf", "--method", "qlora"]),
        planner.cli.main(["table"]),
        planner.cli.main(["table", "--json"]),
        planner.cli.main(["gpus", "--json"]),
    ]
banned = %r
print(json.dumps({"codes": codes, "loaded": sorted(m for m in banned if m in sys.modules)}))
"""


def test_cli_commands_load_no_heavy_or_gui_module():
    banned = HEAVY + GUI
    proc = subprocess.run([sys.executable, "-c", PROBE % (banned,)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["codes"] == [0] * 5
    assert result["loaded"] == [], f"the CLI imported {result['loaded']}"


def _module_level_imports(tree: ast.Module) -> list[tuple[str, int]]:
    """Modules imported when the file is imported: not inside functions or `if TYPE_CHECKING:`."""
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for sub in child.orelse:
                    visit(ast.Module(body=[sub], type_ignores=[]))
                continue
            found.extend(_names(child))
            visit(child)

    visit(tree)
    return found


def _names(node: ast.AST) -> list[tuple[str, int]]:
    if isinstance(node, ast.Import):
        return [(alias.name, node.lineno) for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return [(node.module, node.lineno)]
    return []


def _all_imports(tree: ast.Module) -> list[tuple[str, int]]:
    return [name for node in ast.walk(tree) for name in _names(node)]


def _top(module: str) -> str:
    return module.split(".")[0]


SOURCES = sorted(PLANNER.rglob("*.py"))


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_sources_found():
    names = {_rel(p) for p in SOURCES}
    assert {"planner/cli.py", "planner/memory.py", "planner/hardware.py", "planner/table.py"} <= names


@pytest.mark.parametrize("path", SOURCES, ids=_rel)
def test_static_imports(path):
    rel = _rel(path)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
    everywhere = _all_imports(tree)
    if not rel.startswith("planner/gui/"):
        gui = [(m, line) for m, line in everywhere if _top(m) in GUI]
        assert not gui, f"{rel} imports Qt outside planner/gui: {gui}"
    if not rel.startswith("planner/simulate/"):
        heavy = [(m, line) for m, line in _module_level_imports(tree) if _top(m) in HEAVY]
        assert not heavy, f"{rel} imports {heavy} at module level"
    assert not _trainer_violations(tree), f"{rel} imports from trainer beyond its contract modules {CONTRACT}"


CONTRACT = ("trainer.protocol", "trainer.config", "trainer.rundir")
CONTRACT_MAY_IMPORT = CONTRACT + ("planner.options", "planner.loss", "planner.errors", "planner.units",
                                  "planner.atomic", "psutil", "yaml")


def _trainer_violations(tree: ast.Module) -> list[int]:
    """Lines importing any trainer module but the contract ones (`from trainer import protocol` is fine)."""
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bad += [node.lineno for a in node.names if _top(a.name) == "trainer" and a.name not in CONTRACT]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and _top(node.module) == "trainer":
            if node.module == "trainer":
                ok = all(f"trainer.{a.name}" in CONTRACT for a in node.names)
            else:
                ok = node.module in CONTRACT
            if not ok:
                bad.append(node.lineno)
    return bad


@pytest.mark.parametrize("module", CONTRACT)
def test_contract_modules_stay_light(module):
    """What the planner imports from the trainer imports only the standard library and its peers."""
    path = ROOT / (module.replace(".", "/") + ".py")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    stdlib = set(sys.stdlib_module_names)
    bad = [(m, line) for m, line in _all_imports(tree)
           if _top(m) not in stdlib and m not in CONTRACT_MAY_IMPORT]
    assert not bad, f"{module} imports {bad}"


def test_static_checker_sees_what_it_should():
    """The walker above must catch the forms it is meant to catch (and spare lazy imports)."""
    src = (
        "import os\n"
        "try:\n    import torch\nexcept ImportError:\n    torch = None\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import transformers\n"
        "class A:\n    import peft\n"
        "def f():\n    import bitsandbytes\n"
    )
    found = {_top(m) for m, _ in _module_level_imports(ast.parse(src))}
    assert found & set(HEAVY) == {"torch", "peft"}
    assert {_top(m) for m, _ in _all_imports(ast.parse(src))} >= set(HEAVY)
    ok = ("import trainer.protocol\nfrom trainer.protocol import Event\nfrom trainer import protocol\n"
          "from trainer.config import TrainConfig\nfrom trainer.rundir import RunLock\n")
    assert _trainer_violations(ast.parse(ok)) == []
    bad = "import trainer\nfrom trainer import run\nfrom trainer.session import open_new\nimport trainer.data\n"
    assert _trainer_violations(ast.parse(bad)) == [1, 2, 3, 4]


GUI_DIR = PLANNER / "gui"
GUI_PACKAGES = sorted(p.parent.name for p in GUI_DIR.glob("*/__init__.py"))
SHARED = "common"


def _gui_targets(tree: ast.Module, package: str) -> list[tuple[str, int]]:
    """(planner.gui subpackage, line) for every import in a module of ``planner.gui.<package>``,
    lazy ones included and relative ones resolved; the shell's own modules are not listed."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative to planner.gui.<package>
                base = ["planner", "gui", package][: 3 - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from planner.gui import plan` names the package in the imported names
            modules = [f"{module}.{a.name}" for a in node.names] if module == "planner.gui" else [module]
        else:
            continue
        for m in modules:
            parts = m.split(".")
            if parts[:2] == ["planner", "gui"] and len(parts) > 2 and parts[2] in GUI_PACKAGES:
                found.append((parts[2], node.lineno))
    return sorted(found, key=lambda t: t[1])


def _page_violations(tree: ast.Module, package: str) -> list[tuple[str, int]]:
    allowed = {SHARED} if package == SHARED else {package, SHARED}
    return [(target, line) for target, line in _gui_targets(tree, package) if target not in allowed]


def test_gui_packages_found():
    assert {"common", "hardware", "plan", "runs", "train"} <= set(GUI_PACKAGES)


@pytest.mark.parametrize("path", sorted(GUI_DIR.glob("*/*.py")), ids=_rel)
def test_gui_pages_import_no_other_page(path):
    package = path.parent.name
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=_rel(path))
    bad = _page_violations(tree, package)
    assert not bad, f"{_rel(path)} imports other GUI packages (page -> page, or common -> page): {bad}"


def test_gui_page_checker_sees_what_it_should():
    ok = ("from planner.gui.plan.model import FormValues\nfrom planner.gui.common.worker import LatestOnly\n"
          "from planner.gui.state import AppState\nimport planner.gui.plan.chart\nfrom . import form\n"
          "from ..common import number_box\n")
    assert _page_violations(ast.parse(ok), "plan") == []
    bad = ("from planner.gui.train.fields import validate\n"
           "def f():\n    import planner.gui.runs.model\n"
           "from planner.gui import hardware\nfrom ..train import form\n")
    assert _page_violations(ast.parse(bad), "plan") == [("train", 1), ("runs", 3), ("hardware", 4), ("train", 5)]
    assert _page_violations(ast.parse("from planner.gui.plan import chart\n"), "common") == [("plan", 1)]


def test_table_command_is_fast():
    cmd = [sys.executable, "-m", "planner", "table"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    assert elapsed < 2.0, f"`python -m planner table` took {elapsed:.2f} s (target 0.5 s)"
