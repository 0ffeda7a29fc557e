"""scripts/readme_examples.py: the example outputs of the README and docs/ are what the commands
print today."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from scripttools import load_script

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "readme_examples.py"


@pytest.fixture(scope="module")
def script():
    return load_script("readme_examples")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600)


def test_readme_examples_match_what_the_commands_print():
    """Fails when a change moves a number the README shows: run `python scripts/readme_examples.py`."""
    done = _run("--check")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_readme_marks_the_examples_it_shows(script):
    def commands(path):
        return [c for ex in script.find_examples(path.read_text().splitlines()) for c in ex.commands]

    everywhere = [c for page in script.documents() for c in commands(page)]
    assert any("planner table" in c for c in everywhere)
    assert sum("planner recommend" in c for c in everywhere) == 2
    assert any("validate_estimator.py" in c for c in everywhere)
    assert any("validate_cost.py" in c for c in everywhere)
    tour = commands(ROOT / "README.md")  # the README's tour shows a real estimate and recommendation
    assert any("planner estimate" in c for c in tour) and any("planner recommend" in c for c in tour)


def test_every_page_is_regenerated(script):
    """docs/ pages take part: their examples are checked (and rewritten) with the README's."""
    pages = script.documents()
    assert pages[0] == ROOT / "README.md"
    assert {p.relative_to(ROOT).as_posix() for p in pages[1:]} >= {"docs/validation.md", "docs/recommend.md"}
    assert script.display_name(ROOT / "docs" / "validation.md") == "docs/validation.md"


def test_check_names_the_page_of_a_drifted_example(tmp_path):
    docs = tmp_path / "docs.md"
    readme = tmp_path / "README.md"
    docs.write_text(SAMPLE)
    readme.write_text(FRESH)
    done = _run("--check", "--readme", str(readme), "--readme", str(docs))
    assert done.returncode == 1
    assert "drifted: docs.md:3: " in done.stdout and "drifted: README.md" not in done.stdout
    assert "2 of 4 examples drifted" in done.stdout
    assert _run("--readme", str(readme), "--readme", str(docs)).returncode == 0
    assert docs.read_text() == FRESH and readme.read_text() == FRESH


def test_a_failing_command_rewrites_no_page(tmp_path):
    first, second = tmp_path / "a.md", tmp_path / "b.md"
    first.write_text(SAMPLE)
    second.write_text("<!-- example: exit 3 -->\n```\n```\n")
    done = _run("--readme", str(first), "--readme", str(second))
    assert done.returncode == 2 and done.stderr.startswith("error: b.md:1: ") and "exited 3" in done.stderr
    assert first.read_text() == SAMPLE


SAMPLE = """# Title

<!-- example: python -c "print('one'); print('two  ')" -->
<!-- example: echo three | head -n 1 -->
```
$ stale
```

Text between.

<!-- output: printf '| a |\\n|---|\\n| 1 |\\n' -->
| a |
|---|
| 0 |
<!-- /output -->
Tail.
"""

FRESH = """# Title

<!-- example: python -c "print('one'); print('two  ')" -->
<!-- example: echo three | head -n 1 -->
```
$ python -c "print('one'); print('two  ')"
one
two
$ echo three | head -n 1
three
```

Text between.

<!-- output: printf '| a |\\n|---|\\n| 1 |\\n' -->
| a |
|---|
| 1 |
<!-- /output -->
Tail.
"""


def test_check_lists_drifted_examples_and_writes_nothing(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(SAMPLE)
    done = _run("--check", "--readme", str(readme))
    assert done.returncode == 1
    assert done.stdout.count("drifted: README.md:") == 2
    assert "README.md:3: " in done.stdout and "README.md:11: " in done.stdout
    assert readme.read_text() == SAMPLE


def test_rewrite_then_check_passes(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(SAMPLE)
    assert _run("--readme", str(readme)).returncode == 0
    assert readme.read_text() == FRESH
    done = _run("--check", "--readme", str(readme))
    assert done.returncode == 0, done.stdout
    assert "2 examples up to date" in done.stdout


@pytest.mark.parametrize("text, message", [
    ("<!-- example: echo hi -->\nno block\n", "not followed by a ``` block"),
    ("<!-- output: echo hi -->\n| x |\n", "without a closing"),
    ("<!-- example: exit 3 -->\n```\n```\n", "exited 3"),
])
def test_a_broken_marker_or_command_is_one_error_line(tmp_path, text, message):
    readme = tmp_path / "README.md"
    readme.write_text(text)
    done = _run("--readme", str(readme))
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert readme.read_text() == text


def test_examples_never_see_this_machines_gpus_or_prices(script, tmp_path, monkeypatch):
    """A machine with a GPU or a settings file must regenerate the same README as one without."""
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"gpu_usd_per_hour": {"RTX 4090": 99.0}}))
    monkeypatch.setenv("FINETUNE_PLANNER_SETTINGS", str(settings))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = script.example_env(scratch)

    probe = subprocess.run([sys.executable, "-c", "import pynvml"], env=env, capture_output=True, text=True)
    assert probe.returncode == 1 and "NVML hidden by scripts/readme_examples.py" in probe.stderr
    assert json.loads(script.run("python -m planner gpus --json", env))["gpus"] == []

    recommend = 'python -m planner recommend --model meta-llama/Llama-2-7b-hf --gpu "RTX 4090" --json'
    mine = json.loads(script.run(recommend, dict(env, FINETUNE_PLANNER_SETTINGS=str(settings))))
    example = json.loads(script.run(recommend, env))
    assert mine["options"][0]["cost_usd"] > example["options"][0]["cost_usd"]  # the user's $99/h is ignored
    assert script.run("python -c 'import sys; print(sys.executable)'", env).strip() == sys.executable


def test_markdown_table_renders_planner_table_json(script):
    doc = json.loads(subprocess.run([sys.executable, "-m", "planner", "table", "--seq-len", "1024", "--json"],
                                    capture_output=True, text=True, cwd=ROOT, check=True).stdout)
    lines = script.markdown_table(doc).splitlines()
    assert lines[0] == "| Method | Bits | 7B | 13B | 30B | 70B | 110B | 8x7B | 8x22B |"
    assert len(lines) == 2 + len(doc["rows"])
    assert lines[2].startswith("| Full | AMP | ")
