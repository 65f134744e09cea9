#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, then every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/fixtures.sh
# A stream of real Debian trees for tests/real_trees.rs (cached; a few minutes the first time).
scripts/tree-sequence.sh >/dev/null
scripts/control-plane.sh build
cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings
# ostree-ext's own importer, for tests/ostree_format.rs (its own crate: see its Cargo.toml).
cargo build --release --quiet --manifest-path tools/ostree-import/Cargo.toml
# No backtraces: a failing test's message and location must not drown in frames.
RUST_BACKTRACE=0 cargo test --release --no-fail-fast
# The fuzz targets (image flattening, RPM headers), a bounded run each.
scripts/fuzz.sh 45
