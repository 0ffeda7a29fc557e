"""The trainer's entry and launcher paths import no ML library until a run needs one: a refused
command answers in a fraction of a second, and the multi-process launcher reads stdin and relays
events without ever loading torch (its workers do)."""

import json
import subprocess
import sys

from conftest import ROOT

HEAVY = ("torch", "transformers", "accelerate", "peft", "bitsandbytes", "datasets")


def test_entry_session_and_launcher_modules_are_light():
    probe = ("import json, sys; import trainer.__main__, trainer.run, trainer.session, trainer.launcher, "
             f"trainer.plugins; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
