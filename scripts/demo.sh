#!/usr/bin/env bash
# The first run: plans three successive builds of a small example stream, each with
# the earlier plans as history, and prints the plan and what clients download.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet
strata=target/release/strata
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

echo "== build 1: a fresh plan (16 layers)"
"$strata" plan --components examples/stream/build-1.json -n 16 -o "$out/plan-1.json"
echo "== build 2: kernel, systemd and tzdata updated"
"$strata" plan --components examples/stream/build-2.json -n 16 \
    --prior "$out/plan-1.json" -o "$out/plan-2.json"
echo "== build 3: kernel, podman and openssl updated"
"$strata" plan --components examples/stream/build-3.json -n 16 \
    --prior "$out/plan-2.json" --prior "$out/plan-1.json" --format table

bench=../shared/bench/fcos-stable-2019-2021.jsonl.gz
if [ -e "$bench" ]; then
    echo
    echo "== replaying 45 real Fedora CoreOS stable builds against the baselines (64 layers)"
    "$strata" bench replay --history "$bench" -n 64 --strategy all 2>/dev/null
fi
