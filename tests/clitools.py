"""Running ``python -m planner`` in-process from tests: success, JSON, and the one-line error."""

from __future__ import annotations

import json

from planner.cli import main


def run_ok(capsys, *argv: str) -> str:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, err
    assert err == ""
    return out


def run_json(capsys, *argv: str) -> dict:
    return json.loads(run_ok(capsys, *argv, "--json"))


def run_error(capsys, *argv: str) -> str:
    """A command that must fail: exit 2, nothing on stdout, one 'error:' line on stderr."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 2, (code, out, err)
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    return lines[0]
