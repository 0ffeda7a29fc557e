"""Nothing the README, the scripts, the tests or the resources use lives outside the repository:
a fresh clone is all a user (or CI) has."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEXT_SUFFIXES = {".md", ".py", ".sh", ".json", ".csv", ".txt", ".toml", ".yaml", ".yml", ".jinja"}
OUTSIDE = re.compile(r"\.\./shared|/work/|(?<![\w.~])(?:/home|/root|/mnt|/data|/scratch)/")
"""A sibling checkout (`../shared/...`), this machine's work tree, or someone's home or data disk."""
PARENTS = re.compile(r"Path\(__file__\)\.resolve\(\)\.parents\[(\d+)\]")
MARKDOWN_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _files(*tops: str) -> list[Path]:
    found = []
    for top in tops:
        base = ROOT / top
        candidates = [base] if base.is_file() else base.rglob("*")
        for path in candidates:
            parts = path.relative_to(ROOT).parts
            if path.is_file() and path.suffix in TEXT_SUFFIXES and not any(
                    p.startswith(".") or p == "__pycache__" for p in parts):
                found.append(path)
    return found


FILES = _files("README.md", "pyproject.toml", "scripts", "tests", "resources", ".ci/run")


def test_the_search_covers_what_a_user_gets():
    names = {p.relative_to(ROOT).as_posix() for p in FILES}
    assert {"README.md", "scripts/setup.sh", "resources/gpus.json", "resources/reference/measurements.csv"} <= names


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_no_path_outside_the_repository():
    hits = []
    for path in FILES:
        if path == Path(__file__):
            continue  # this file spells the patterns it looks for
        text = path.read_text(encoding="utf-8", errors="replace")
        hits += [f"{_rel(path)}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}" for m in OUTSIDE.finditer(text)]
    assert not hits, hits


def test_scripts_and_tests_find_their_data_inside_the_repository():
    """`Path(__file__).resolve().parents[k]` never climbs above the repository root."""
    climbing = []
    for path in (p for p in FILES if p.suffix == ".py"):
        depth = len(path.relative_to(ROOT).parts) - 1  # scripts/x.py: 1, and its parents[1] is the root
        climbing += [f"{_rel(path)}: parents[{m.group(1)}]" for m in PARENTS.finditer(path.read_text(encoding="utf-8"))
                     if int(m.group(1)) > depth]
    assert not climbing, climbing


def test_readme_links_point_into_the_repository():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = [t for t in MARKDOWN_LINK.findall(text) if not t.startswith(("http://", "https://", "#"))]
    assert targets, "the README shows its screenshots"
    for target in targets:
        assert not target.startswith(("/", "..")), target
        assert (ROOT / target).resolve().is_relative_to(ROOT) and (ROOT / target).exists(), target
