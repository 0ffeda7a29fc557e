"""Every command in the bash blocks of the README and docs/*.md works as written after the two
set-up commands.

The commands are read from the pages themselves (readme_examples.documents()), so a new one is
checked the day it is added (or fails `test_every_readme_command_is_one_we_check` until this file
knows how to check it); a command moved from the README into docs/ stays checked. The
planner's commands and `make-demo` really run, in an empty folder as on a fresh clone; the
trainer's training commands are checked by the trainer's own argument parser (training is
tests/trainer's job).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from scripttools import load_script

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGES = load_script("readme_examples").documents()
VENV_BIN = Path(sys.executable).parent

SET_UP = ("scripts/run.sh", "scripts/test.sh")
ACTIVATE = ["source", ".venv/bin/activate"]
SHELL_BUILTINS = ("echo",)
REPO_PATH = re.compile(r"(?<![\w./~-])((?:planner|trainer|scripts|tests|resources|docs|\.ci)/[\w./*-]*)")
NO_GPU_HERE = "found no NVIDIA GPU"
"""What `recommend --gpu auto` says with NVML hidden (the examples' environment): one line, exit 2."""


def bash_blocks(text: str) -> list[list[str]]:
    """The lines of every ```bash block, continuation lines (`\\`) joined."""
    blocks, current = [], None
    for line in text.splitlines():
        if current is None:
            if line.strip() == "```bash":
                current = []
        elif line.startswith("```"):
            blocks.append(current)
            current = None
        elif current and current[-1].endswith("\\"):
            current[-1] = current[-1][:-1] + " " + line.strip()
        else:
            current.append(line)
    return blocks


def readme_commands(page: Path = README) -> list[list[str]]:
    """Each command of ``page`` as argv, comments and leading VAR=value assignments dropped."""
    commands = []
    for block in bash_blocks(page.read_text(encoding="utf-8")):
        for line in block:
            argv = shlex.split(line, comments=True)
            while argv and re.fullmatch(r"[A-Z_]+=\S*", argv[0]):
                argv = argv[1:]
            if argv:
                commands.append(argv)
    return commands


README_COMMANDS = readme_commands()
COMMANDS = [argv for page in PAGES for argv in readme_commands(page)]


def _module(argv: list[str]) -> tuple[str, list[str]] | None:
    """("planner" | "trainer", its arguments) for `python -m X ...` and `torchrun ... -m X ...`."""
    if argv[0] == "python" and argv[1:2] == ["-m"]:
        return argv[2], argv[3:]
    if argv[0] == "torchrun" and "-m" in argv:
        i = argv.index("-m")
        return argv[i + 1], argv[i + 2:]
    return None


def _of(module: str) -> list[list[str]]:
    return [m[1] for argv in COMMANDS if (m := _module(argv)) is not None and m[0] == module]


def _id(argv: list[str]) -> str:
    return " ".join(argv)[:90]


PLANNER = _of("planner")
TRAINER = _of("trainer")


def test_the_pages_are_the_readme_and_docs():
    names = [p.relative_to(ROOT).as_posix() for p in PAGES]
    assert names[0] == "README.md" and len(names) > 1 and all(n.startswith("docs/") for n in names[1:])


def test_every_readme_command_is_one_we_check():
    assert len(COMMANDS) >= 20
    for argv in COMMANDS:
        known = (argv[0] in SET_UP or argv == ACTIVATE or argv[0] in SHELL_BUILTINS
                 or (m := _module(argv)) is not None and m[0] in ("planner", "trainer"))
        assert known, f"README or docs/ command this test cannot check: {shlex.join(argv)}"
    assert [a[0] for a in README_COMMANDS[:2]] == list(SET_UP)  # the two set-up commands come first
    assert README_COMMANDS[2] == ACTIVATE  # then, once, how the rest find `python`
    later = [argv for page in PAGES[1:] for argv in readme_commands(page)]
    assert not any(argv[0] in SET_UP or argv == ACTIVATE for argv in later)  # said once, in the README


def test_no_command_needs_an_activated_venv_it_does_not_mention():
    """`python` means the venv's: the README says how to get it right after the set-up commands."""
    text = README.read_text(encoding="utf-8")
    first_python = text.index("python -m ")
    assert text.index("source .venv/bin/activate") < first_python


@pytest.mark.parametrize("script", SET_UP)
def test_set_up_scripts_exist_and_run(script):
    path = ROOT / script
    assert path.is_file() and os.access(path, os.X_OK)


def test_torchrun_is_installed_by_the_set_up():
    if any(argv[0] == "torchrun" for argv in COMMANDS):
        assert (VENV_BIN / "torchrun").is_file()


@pytest.mark.parametrize("argv", PLANNER, ids=_id)
def test_planner_command_parses(argv):
    from planner.cli import build_parser

    args = build_parser().parse_args(argv)
    assert args.command is not None


class _Parsed(Exception):
    def __init__(self, namespace: argparse.Namespace) -> None:
        super().__init__("parsed")
        self.namespace = namespace


@pytest.mark.parametrize("argv", TRAINER, ids=_id)
def test_trainer_command_parses(argv, monkeypatch):
    """The trainer's own parser accepts it; parsing stops there instead of training."""
    import trainer.__main__ as cli

    def parse_only(self, args=None, namespace=None):
        raise _Parsed(argparse.ArgumentParser.parse_args(self, args, namespace))

    monkeypatch.setattr(cli._Parser, "parse_args", parse_only)
    with pytest.raises(_Parsed) as parsed:
        cli.main(argv)
    assert parsed.value.namespace.command == argv[0]


@pytest.fixture(scope="module")
def fresh_clone(tmp_path_factory):
    """An empty working folder after the README's `make-demo` commands ran in it, and the
    examples' environment (NVML hidden, no user settings), as on a fresh machine."""
    examples = load_script("readme_examples")
    scratch = tmp_path_factory.mktemp("readme-env")
    env = examples.example_env(scratch)
    cwd = tmp_path_factory.mktemp("fresh")
    # each distinct command once: several pages repeat `make-demo --out demo`
    for args in dict.fromkeys(tuple(a) for a in TRAINER if a[0] == "make-demo"):
        done = subprocess.run([sys.executable, "-m", "trainer", *args], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    return cwd, env


@pytest.mark.parametrize("argv", PLANNER, ids=_id)
def test_planner_command_runs(argv, fresh_clone):
    cwd, env = fresh_clone
    done = subprocess.run([sys.executable, "-m", "planner", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    if "--gpu" in argv and argv[argv.index("--gpu") + 1] == "auto":  # reads this machine's GPU
        assert done.returncode == 2 and NO_GPU_HERE in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
        return
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
    if "--json" in argv:
        json.loads(done.stdout)


def test_trainer_files_the_readme_names_are_the_ones_make_demo_writes(fresh_clone):
    """`--config`, `--resume` and `--run` name what `make-demo` (or the demo run) creates."""
    cwd, _ = fresh_clone
    made = {}
    for config in cwd.glob("*/run.json"):
        made[config.relative_to(cwd).as_posix()] = Path(json.loads(config.read_text())["output_dir"])
    assert made, "make-demo wrote no run.json"
    run_dirs = {p.relative_to(cwd).as_posix() for p in made.values()}
    for args in TRAINER:
        for flag, where in (("--config", made), ("--resume", run_dirs), ("--run", run_dirs)):
            if flag in args:
                value = args[args.index(flag) + 1]
                if value == "RUN_DIR":  # the multi-node recipe's placeholder, spelled as one
                    continue
                assert value in where, f"{shlex.join(args)}: {value} is not among {sorted(where)}"


def test_every_repository_path_the_readme_names_exists():
    """Paths are from the repository root on every page (as the commands run), docs/ included."""
    named = {(page.relative_to(ROOT).as_posix(), m.group(1).rstrip(".,"))
             for page in PAGES for m in REPO_PATH.finditer(page.read_text(encoding="utf-8"))}
    assert len(named) > 30
    missing = sorted(f"{page}: {p}" for page, p in named if not glob.glob(str(ROOT / p)))
    assert not missing, f"README or docs/ name paths that are not in the repository: {missing}"
