#!/usr/bin/env bash
# Create .venv and install the project (idempotent; a no-op when nothing changed).
#   scripts/setup.sh            runtime dependencies
#   scripts/setup.sh test       plus the test extra
# Progress goes to stderr, one line per step, so a first run is never a silent minute.
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-}"
venv=.venv
py="$venv/bin/python"
torch_pin="2.13.0"

# A stamp per extra records what was installed; one newer than pyproject.toml means nothing to do.
# Every extra installs the runtime dependencies too, so its set-up also stamps the plain one:
# run.sh after test.sh finds the work done.
stamp() { echo "$venv/.installed${1:+-$1}"; }
if [[ -x $py && -f $(stamp "$extra") && $(stamp "$extra") -nt pyproject.toml ]]; then
    exit 0
fi

started=$SECONDS
say() { printf 'set-up: %s\n' "$*" >&2; }
timed() {  # timed WHAT COMMAND...: one line before, the seconds it took after
    local t0=$SECONDS
    say "$1 ..."
    shift
    "$@"
    say "  done in $((SECONDS - t0)) s"
}

say "installing into $venv${extra:+ with the '$extra' extra} (a few minutes the first time; later runs skip this)"
if [[ ! -x $py ]]; then
    timed "creating the virtual environment $venv" python3 -m venv "$venv"
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first and pinned: any other request pulls a multi-GB CUDA build. On a GPU machine the
# same pin resolves to the CUDA wheel.
if "$py" -c "import torch" >/dev/null 2>&1; then
    say "torch $("$py" -c 'import torch; print(torch.__version__)') is already installed"
else
    timed "installing torch $torch_pin (the largest download)" "$py" -m pip install --quiet "torch==$torch_pin"
fi
timed "installing the app and its dependencies (transformers, peft, bitsandbytes, PySide6, ...)${extra:+ plus the '$extra' extra}" \
    "$py" -m pip install --quiet -e ".${extra:+[$extra]}"
touch "$(stamp "$extra")" "$(stamp "")"
say "ready in $((SECONDS - started)) s"
