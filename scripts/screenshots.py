#!/usr/bin/env python3
"""Render the README's pictures of the app: `python scripts/screenshots.py`.

Each page is drawn offscreen by the app's own `gui --screenshot`, so the picture is the real window.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "resources" / "screenshots"
PAGES = ("plan",)  # the pages that show something real so far


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "QT_QPA_PLATFORM": os.environ.get("QT_QPA_PLATFORM", "offscreen")}
    for page in PAGES:
        target = OUT / f"{page}.png"
        subprocess.run([sys.executable, "-m", "planner", "gui", "--page", page, "--screenshot", str(target)],
                       cwd=ROOT, env=env, check=True)
        print(target.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
