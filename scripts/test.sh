#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, then every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/fixtures.sh
scripts/control-plane.sh build
cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --release --no-fail-fast
