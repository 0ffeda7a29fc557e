#!/usr/bin/env python3
"""Regenerate the README's and docs/'s example outputs by running the commands that print them.

    python scripts/readme_examples.py            rewrite every example in README.md and docs/*.md
    python scripts/readme_examples.py --check    list the examples that drifted (exit 1), write nothing
    python scripts/readme_examples.py --markdown-table   (a filter: `planner table --json` on stdin)

Two kinds of example, each marked by an HTML comment (invisible on GitHub):

    <!-- example: python -m planner estimate --model meta-llama/Llama-2-7b-hf -->
    ```
    $ python -m planner estimate --model meta-llama/Llama-2-7b-hf
    (its output)
    ```

One or more ``example:`` lines, then a fenced block showing each command after ``$ `` and what it
prints. ``output:`` instead marks a region that *is* the command's output (a command that prints
Markdown), up to ``<!-- /output -->``. Commands run through bash from the repository root, in
README.md and in docs/ alike, so a ``| head -n 8`` is real and the reader can run exactly what the
block shows; ``python`` is this interpreter.

The outputs must not depend on the machine: the commands run with NVML hidden (``import pynvml``
fails, so no GPU is ever seen), no CUDA device, and a settings file that does not exist (catalog
prices only). Commands that read the local hardware (``--gpu auto``, ``gpus``) or time something do
not belong in an example.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from planner.units import GiB

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"

EXAMPLE = re.compile(r"^<!-- example: (?P<command>.+?) -->$")
OUTPUT = re.compile(r"^<!-- output: (?P<command>.+?) -->$")
OUTPUT_END = "<!-- /output -->"
FENCE = "```"
PROMPT = "$ "
TIMEOUT_S = 300

HIDDEN_NVML = ('raise ImportError("NVML hidden by scripts/readme_examples.py: '
               'outputs must not depend on this machine")\n')
"""A ``pynvml`` module placed first on PYTHONPATH: planner.nvml then reports no NVML, as on a
machine without the NVIDIA driver."""


def documents() -> list[Path]:
    """The pages users read: README.md, then docs/*.md. Their examples are regenerated here and
    their commands, paths and links are checked by tests/scripts."""
    return [README, *sorted(DOCS.glob("*.md"))]


def display_name(path: Path) -> str:
    """``docs/training.md`` for a page of this repository, the bare file name for any other."""
    path = path.resolve()
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name


class ExampleError(Exception):
    """A malformed marker or a command that failed: the page cannot be regenerated."""


@dataclass(frozen=True)
class Example:
    """One marked region of a page: lines [start, end) are replaced by what the commands print."""

    commands: tuple[str, ...]
    fenced: bool  # True: a ``` block with "$ command" lines; False: the raw output (Markdown)
    start: int
    end: int
    marker_line: int  # 1-based line of the first marker, for messages
    page: str = "README.md"

    def label(self) -> str:
        return f"{self.page}:{self.marker_line}: {' ; '.join(self.commands)}"


def find_examples(lines: list[str], page: str = "README.md") -> list[Example]:
    """Every marked example in ``lines`` (the page ``page`` without line ends), in order."""
    found: list[Example] = []
    i = 0
    while i < len(lines):
        if (m := OUTPUT.match(lines[i])) is not None:
            try:
                end = lines.index(OUTPUT_END, i + 1)
            except ValueError:
                raise ExampleError(f"{page}:{i + 1}: `output:` marker without a closing {OUTPUT_END}") from None
            found.append(Example((m["command"],), False, i + 1, end, i + 1, page))
            i = end + 1
            continue
        commands: list[str] = []
        first = i
        while i < len(lines) and (m := EXAMPLE.match(lines[i])) is not None:
            commands.append(m["command"])
            i += 1
        if not commands:
            i += 1
            continue
        if i >= len(lines) or not lines[i].startswith(FENCE):
            raise ExampleError(f"{page}:{first + 1}: `example:` marker not followed by a ``` block")
        close = next((j for j in range(i + 1, len(lines)) if lines[j].startswith(FENCE)), None)
        if close is None:
            raise ExampleError(f"{page}:{i + 1}: unclosed ``` block")
        found.append(Example(tuple(commands), True, i, close + 1, first + 1, page))
        i = close + 1
    return found


def example_env(scratch: Path) -> dict[str, str]:
    """The environment every example runs in: this machine's GPUs, CUDA and the user's prices
    out of sight; ``python`` on PATH is this interpreter (the project's venv)."""
    (scratch / "pynvml.py").write_text(HIDDEN_NVML)
    env = dict(os.environ)
    env.update({
        "PATH": str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""),
        "PYTHONPATH": os.pathsep.join([str(scratch), str(ROOT)]),
        "CUDA_VISIBLE_DEVICES": "",
        "FINETUNE_PLANNER_SETTINGS": str(scratch / "no-settings.json"),
        "PYTHONIOENCODING": "utf-8",
        "PYTHONHASHSEED": "0",
        "LC_ALL": "C.UTF-8",
    })
    return env


def run(command: str, env: dict[str, str]) -> str:
    """What ``command`` prints on stdout, run by bash from the repository root."""
    try:
        done = subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, capture_output=True,
                              text=True, encoding="utf-8", timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ExampleError(f"`{command}` took longer than {TIMEOUT_S} s") from None
    if done.returncode != 0 or not done.stdout.strip():
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise ExampleError(f"`{command}` exited {done.returncode}: {last}")
    return done.stdout


def render(example: Example, outputs: list[str]) -> list[str]:
    """The lines that replace ``example``'s region."""
    if not example.fenced:
        return _lines(outputs[0])
    body: list[str] = []
    for command, out in zip(example.commands, outputs):
        body += [PROMPT + command, *_lines(out)]
    return [FENCE, *body, FENCE]


def _lines(out: str) -> list[str]:
    # trailing blanks are invisible on the page and would only make diffs noisy
    return [line.rstrip() for line in out.rstrip("\n").splitlines()]


def _outputs(example: Example, env: dict[str, str]) -> list[str]:
    try:
        return [run(c, env) for c in example.commands]
    except ExampleError as exc:
        raise ExampleError(f"{example.page}:{example.marker_line}: {exc}") from None


def regenerate(text: str, env: dict[str, str], page: str = "README.md"
               ) -> tuple[str, list[tuple[Example, list[str], list[str]]]]:
    """``text`` with every example rewritten, and the examples that changed (with old and new lines)."""
    lines = text.splitlines()
    examples = find_examples(lines, page)
    drifted: list[tuple[Example, list[str], list[str]]] = []
    replacements = [(ex, render(ex, _outputs(ex, env))) for ex in examples]
    # bottom up, so earlier line numbers stay valid
    for ex, new in reversed(replacements):
        old = lines[ex.start:ex.end]
        if old != new:
            drifted.insert(0, (ex, old, new))
        lines[ex.start:ex.end] = new
    return "\n".join(lines) + "\n", drifted


def markdown_table(doc: dict) -> str:
    """``python -m planner table --json`` as the README's Markdown table (GiB as nvidia-smi shows it)."""
    sizes = [c["size"] for c in doc["columns"]]
    out = ["| Method | Bits | " + " | ".join(sizes) + " |",
           "|---|---|" + "---:|" * len(sizes)]
    for row in doc["rows"]:
        cells = " | ".join(f"{b / GiB:.1f}" for b in row[doc["quantity"]])
        out.append(f"| {row['method']} | {row['bits']} | {cells} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 listing drifted examples; write nothing")
    mode.add_argument("--markdown-table", action="store_true",
                      help="read `python -m planner table --json` on stdin, print it as a Markdown table")
    # tests point it at pages of their own (repeatable); by default every page of documents()
    ap.add_argument("--readme", type=Path, action="append", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.markdown_table:
        sys.stdout.write(markdown_table(json.load(sys.stdin)))
        return 0
    pages = args.readme or documents()
    texts = {path: path.read_text(encoding="utf-8") for path in pages}
    rewritten: dict[Path, str] = {}
    drifted: list[tuple[Example, list[str], list[str]]] = []
    count = 0
    try:
        with tempfile.TemporaryDirectory(prefix="readme-examples-") as scratch:
            env = example_env(Path(scratch))
            for path, text in texts.items():
                page = display_name(path)
                count += len(find_examples(text.splitlines(), page))
                rewritten[path], changed = regenerate(text, env, page)
                drifted += changed
    except ExampleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        for ex, old, new in drifted:
            print(f"drifted: {ex.label()}")
            sys.stdout.writelines(line + "\n" for line in difflib.unified_diff(
                old, new, ex.page, "regenerated", lineterm="", n=1))
        if drifted:
            print(f"{len(drifted)} of {count} examples drifted; run `python scripts/readme_examples.py`")
            return 1
        print(f"{count} examples up to date")
        return 0
    # written only once every page regenerated: a failing command leaves all of them as they were
    for path, new_text in rewritten.items():
        if new_text != texts[path]:
            path.write_text(new_text, encoding="utf-8")
    print(f"{count} examples, {len(drifted)} rewritten")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
