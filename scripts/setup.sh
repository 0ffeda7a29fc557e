#!/usr/bin/env bash
# Create .venv and install the project (idempotent; a no-op when nothing changed).
#   scripts/setup.sh            runtime dependencies
#   scripts/setup.sh test       plus the test extra
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-}"
venv=.venv
py="$venv/bin/python"

if [[ ! -x $py ]]; then
    python3 -m venv "$venv"
fi

# The stamp records what was installed; skip pip entirely when it is newer than pyproject.toml.
stamp="$venv/.installed${extra:+-$extra}"
if [[ -f $stamp && $stamp -nt pyproject.toml ]]; then
    exit 0
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first and pinned: any other request pulls a multi-GB CUDA build. On a GPU machine the
# same pin resolves to the CUDA wheel.
if ! "$py" -c "import torch" >/dev/null 2>&1; then
    "$py" -m pip install --quiet "torch==2.13.0"
fi
"$py" -m pip install --quiet -e ".${extra:+[$extra]}"
touch "$stamp"
