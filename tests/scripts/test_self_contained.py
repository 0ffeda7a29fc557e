"""Nothing the README, docs/, the scripts, the tests or the resources use lives outside the
repository: a fresh clone is all a user (or CI) has."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from scripttools import load_script

ROOT = Path(__file__).resolve().parents[2]
TEXT_SUFFIXES = {".md", ".py", ".sh", ".json", ".csv", ".txt", ".toml", ".yaml", ".yml", ".jinja"}
OUTSIDE = re.compile(r"\.\./shared|/work/|(?<![\w.~])(?:/home|/root|/mnt|/data|/scratch)/")
"""A sibling checkout (`../shared/...`), this machine's work tree, or someone's home or data disk."""
PARENTS = re.compile(r"Path\(__file__\)\.resolve\(\)\.parents\[(\d+)\]")
MARKDOWN_LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} (.+)$")
PAGES = load_script("readme_examples").documents()


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


FILES = _files("README.md", "docs", "pyproject.toml", "scripts", "tests", "resources", ".ci/run")


def test_the_search_covers_what_a_user_gets():
    names = {p.relative_to(ROOT).as_posix() for p in FILES}
    assert {"README.md", "docs/training.md", "scripts/setup.sh", "resources/gpus.json",
            "resources/reference/measurements.csv"} <= names


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


def anchors(text: str) -> set[str]:
    """The fragments GitHub gives ``text``'s headings: lower case, punctuation dropped, spaces as
    hyphens ("## Time and cost model" -> "time-and-cost-model"). Lines in ``` blocks are no headings."""
    found, fenced = set(), False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (m := HEADING.match(line)):
            found.add(re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-"))
    return found


def test_anchors_are_githubs():
    assert anchors("# Fine-Tune Planner\n```bash\n# a comment\n```\n## What it never does\n"
                   "### Mixture of experts (Mixtral, Qwen-MoE)\n") == {
        "fine-tune-planner", "what-it-never-does", "mixture-of-experts-mixtral-qwen-moe"}


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_links_point_into_the_repository(page):
    """Relative to the page, as GitHub resolves them; a #fragment names a heading of its target."""
    text = page.read_text(encoding="utf-8")
    targets = [t for t in MARKDOWN_LINK.findall(text) if not t.startswith(("http://", "https://"))]
    if page.name == "README.md":
        assert targets, "the README shows its screenshots"
    for target in targets:
        path, _, fragment = target.partition("#")
        assert not path.startswith("/"), target
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.is_relative_to(ROOT) and resolved.exists(), f"{_rel(page)}: {target}"
        if fragment:
            assert fragment in anchors(resolved.read_text(encoding="utf-8")), f"{_rel(page)}: {target}"


def test_every_docs_page_is_linked_from_the_readme():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    linked = {t.partition("#")[0] for t in MARKDOWN_LINK.findall(text)}
    assert {_rel(p) for p in PAGES[1:]} <= linked
