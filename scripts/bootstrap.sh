#!/usr/bin/env bash
# Prepares a fresh machine: a virtualenv in .venv with the Python packages
# the project needs, and the Rust extension built into it (release mode).
# Safe to run again: it only redoes what is missing or out of date.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate

# Packages: the test extra (Django, DRF, pytest, ruff) and maturin to build.
stamp=.venv/.restflow-deps
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    python -m pip install --quiet --disable-pip-version-check --upgrade pip
    python -m pip install --quiet --disable-pip-version-check \
        "maturin>=1.7,<2" "Django>=4.2" "djangorestframework>=3.14" \
        "pytest>=8" "pytest-django>=4.8" "ruff>=0.6" "cachetools>=5" "celery>=5"
    touch "$stamp"
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "bootstrap: cargo (the Rust toolchain) is required; install it with rustup." >&2
    exit 1
fi

# The extension: built in place (python/restflow/_engine*.so) and installed
# as an editable package, so `import restflow` works from any directory.
maturin develop --release --quiet 2>&1 | grep -v "^$" | tail -n 3
