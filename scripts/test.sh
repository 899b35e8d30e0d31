#!/usr/bin/env bash
# The whole test suite: lint and format checks, the engine's Rust tests
# (no Python involved), then the Python tests against the built extension.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
# shellcheck disable=SC1091
. .venv/bin/activate

echo "== cargo fmt / clippy / ruff"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
ruff check python tests benches examples
ruff format --check python tests benches examples

echo "== cargo test (engine and bindings crates), examples, docs"
cargo test --workspace --quiet
# The engine crate's examples must build (tests/test_crate_examples.py and
# tests/redis/test_crate_examples_redis.py run them), and its documentation
# must have no broken links.
cargo build --workspace --examples --quiet
RUSTDOCFLAGS=-Dwarnings cargo doc -p restflow-cache --no-deps --quiet

echo "== pytest"
# The Redis tests run against every server in tests/redis/conftest.py's
# SERVERS; here a missing one fails the run instead of being skipped.
RESTFLOW_REQUIRE_SERVERS=1 python -m pytest -q "$@"

echo "== pytest on the oldest supported Django and DRF (4.2 LTS, 3.14)"
# What touches Django and DRF (views, requests, responses, signals,
# settings, commands, caches, the drop-in names); the engine's own
# behaviour does not depend on their versions.
if [ $# -eq 0 ]; then
    RESTFLOW_REQUIRE_SERVERS=1 .venv-oldest/bin/python -m pytest -q \
        tests/test_cache_response*.py tests/test_spec_views.py tests/test_adrf_views.py \
        tests/test_headers.py tests/test_invalidation_rules.py tests/test_invalidation_dispatchers.py \
        tests/test_django_backend.py tests/test_django_redis.py tests/test_django_store_outages.py \
        tests/test_django_values.py tests/test_command.py \
        tests/test_docs_examples.py tests/test_rule_identity.py tests/test_cache_register.py \
        tests/test_store_and_settings.py tests/test_key_constructors.py tests/compat
fi
