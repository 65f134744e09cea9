#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time (default 45 s each), as CI
# does. libFuzzer with coverage but no sanitizer (-s none), so the stable toolchain
# suffices: RUSTC_BOOTSTRAP lets cargo-fuzz pass its unstable flags to it. A crash
# fails the run and leaves its input in fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
SECONDS_EACH=${1:-45}
command -v cargo-fuzz >/dev/null || cargo install --locked --quiet cargo-fuzz
export RUSTC_BOOTSTRAP=1
cargo fuzz build -s none
for target in $(cargo fuzz list); do
    echo "fuzz: $target for ${SECONDS_EACH}s" >&2
    cargo fuzz run -s none "$target" -- -max_total_time="$SECONDS_EACH" 2>&1 | tail -1
done
