#!/usr/bin/env bash
# Set up (first run only) with the test extra and run the whole suite, Qt offscreen.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
export QT_QPA_PLATFORM=offscreen
exec .venv/bin/python -m pytest "$@"
