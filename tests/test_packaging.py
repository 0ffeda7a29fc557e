"""The project as a user installs it: a wheel, not the checkout.

A wheel is built from a copy of the repository, installed (non-editable, no dependencies) into a
fresh virtual environment and run from a folder outside the repository: ``estimate``, ``table``,
``make-demo`` and a 3-step demo run. The dependencies come from this interpreter's site-packages
through a ``.pth`` file (nothing is downloaded); a ``.pth`` line only adds a folder to
``sys.path``, it does not run the ``.pth`` files inside it, so the editable install's import hook
stays out of the fresh environment and ``planner`` really comes from the wheel.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from planner.resource_files import PACKAGE, resource

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[1]
CODE = ("planner", "trainer")
SOURCES = ("pyproject.toml", "README.md", *CODE, "resources")
"""What the wheel is built from (scripts/ and tests/ are not part of it)."""
MODEL = "meta-llama/Llama-3.1-8B"
TIMEOUT = 300


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]


def _code_packages() -> set[str]:
    """Every folder of planner/ and trainer/ that holds Python code, as a dotted name."""
    return {p.parent.relative_to(ROOT).as_posix().replace("/", ".")
            for top in CODE for p in (ROOT / top).rglob("*.py") if "__pycache__" not in p.parts}


def test_pyproject_lists_every_package():
    """`packages` is a list (`find` cannot see the remapped resources/), so a new subpackage must
    be added to it by hand, or the wheel ships without it."""
    listed = set(_pyproject()["packages"])
    missing = _code_packages() - listed
    assert not missing, f"add {sorted(missing)} to [tool.setuptools] packages in pyproject.toml"
    assert listed - _code_packages() == {PACKAGE}


def test_resources_are_the_package_mapped_onto_resources_folder():
    assert _pyproject()["package-dir"][PACKAGE] == "resources"
    # In this checkout (an editable install) the package is the repository's folder itself.
    assert Path(str(resource("gpus.json"))).samefile(ROOT / "resources" / "gpus.json")
    assert resource("models").is_dir()


def test_py_typed_present_where_declared():
    declared = [pkg for pkg, globs in _pyproject()["package-data"].items() if "py.typed" in globs]
    assert sorted(declared) == ["planner", "trainer"]
    for pkg in declared:
        assert (ROOT / pkg / "py.typed").is_file(), pkg


# -- the installed wheel --------------------------------------------------------------------------
@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    python: Path
    work: Path
    """An empty folder outside the repository: the working directory of every command."""
    env: dict[str, str]

    def run(self, *args: str, python: Path | str | None = None, **kwargs) -> subprocess.CompletedProcess:
        done = subprocess.run([str(python or self.python), *args], cwd=self.work, env=self.env, capture_output=True,
                              text=True, timeout=TIMEOUT, **kwargs)
        assert done.returncode == 0, f"{' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}"
        return done


def _build_wheel(tmp: Path) -> Path:
    """From a copy: building in the checkout would write build/ into a tree others work in."""
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
        else:
            shutil.copy2(ROOT / name, src / name)
    # This environment's setuptools builds it, offline; without one, pip fetches it from the registry.
    offline = ["--no-build-isolation", "--no-index"] if importlib.util.find_spec("setuptools") else []
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "-q", "-w", str(tmp / "dist"),
                    *offline], check=True, capture_output=True, timeout=TIMEOUT)
    (wheel,) = (tmp / "dist").glob("*.whl")
    return wheel


def _fresh_venv(venv: Path, wheel: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=TIMEOUT)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    # This pip, aimed at the fresh interpreter, before the .pth exists: it sees no other install
    # of the project, so it has nothing to uninstall anywhere else.
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
                    str(wheel)], check=True, capture_output=True, timeout=TIMEOUT)
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True, timeout=TIMEOUT).stdout.strip()
    Path(purelib, "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n", encoding="utf-8")
    return python


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    tmp = tmp_path_factory.mktemp("packaging")
    wheel = _build_wheel(tmp)
    python = _fresh_venv(tmp / "venv", wheel)
    work = tmp / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONNOUSERSITE="1",
               CUDA_VISIBLE_DEVICES="")
    return Installed(wheel, tmp / "venv", python, work, env)


def test_wheel_ships_the_code_the_data_and_the_type_markers(installed):
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    code = {p.relative_to(ROOT).as_posix() for top in CODE for p in (ROOT / top).rglob("*.py")
            if "__pycache__" not in p.parts}
    assert not code - names, f"missing from the wheel: {sorted(code - names)}"
    data = {"planner/resources/gpus.json"} | {f"planner/resources/models/{p.name}"
                                              for p in (ROOT / "resources" / "models").glob("*.json")}
    assert not data - names, f"missing from the wheel: {sorted(data - names)}"
    assert {"planner/py.typed", "trainer/py.typed"} <= names
    # The README's screenshots and the validation scripts' measurements are read from the
    # checkout only; a user's install does without them.
    assert not [n for n in names if n.startswith(("planner/resources/screenshots", "planner/resources/reference"))]


def test_the_fresh_environment_imports_the_wheel(installed):
    probe = ("import json, sys, planner, trainer\n"
             "from planner.resource_files import resource\n"
             "print(json.dumps({'files': [planner.__file__, trainer.__file__, str(resource('gpus.json'))],\n"
             "                  'finders': [getattr(f, '__name__', type(f).__name__) for f in sys.meta_path]}))\n")
    found = json.loads(installed.run("-c", probe).stdout)
    venv = installed.venv.resolve()
    for file in found["files"]:
        assert Path(file).resolve().is_relative_to(venv), file
    assert not [f for f in found["finders"] if "Editable" in f]


def test_estimate_runs_from_the_wheel(installed):
    out = installed.run("-m", "planner", "estimate", "--model", MODEL).stdout
    assert out.startswith(MODEL)


def test_table_from_the_wheel_equals_the_checkouts(installed):
    """Same figures from the installed data as from the repository's (editable install)."""
    wheel = installed.run("-m", "planner", "table", "--json").stdout
    checkout = installed.run("-m", "planner", "table", "--json", python=sys.executable).stdout
    assert json.loads(wheel) == json.loads(checkout)
    assert wheel == checkout
    script = installed.python.parent / ("finetune-planner.exe" if os.name == "nt" else "finetune-planner")
    assert installed.run("table", "--json", python=script).stdout == checkout


def test_demo_trains_three_steps_from_the_wheel(installed):
    installed.run("-m", "trainer", "make-demo", "--out", "demo")
    config = json.loads((installed.work / "demo" / "run.json").read_text(encoding="utf-8"))
    run_dir = installed.work / "runs" / "three-steps"
    config.update(max_steps=3, save_steps=0, output_dir=str(run_dir))
    (installed.work / "three-steps.json").write_text(json.dumps(config), encoding="utf-8")
    out = installed.run("-m", "trainer", "run", "--config", "three-steps.json", stdin=subprocess.DEVNULL).stdout
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["step"] for e in events if e["event"] == "step"] == [1, 2, 3]
    assert events[-1]["event"] == "end" and events[-1]["status"] == "completed", events[-1]
    assert (run_dir / "metrics.jsonl").is_file()
