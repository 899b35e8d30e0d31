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
