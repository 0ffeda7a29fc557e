#!/usr/bin/env bash
# Set up (first run only) and open the app. Extra arguments go to `python -m planner`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m planner "$@"
